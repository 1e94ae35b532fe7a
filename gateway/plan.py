"""One request's cascade plan: the route's defaults, overridden by the body's ``coe`` object,
overridden in turn by the ``x-coe-*`` headers (docs/api.md, "Headers": order of precedence)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import BadRequest
from policies.answers import AnswerSpec
from policies.threshold import parse_threshold

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.config import PolicyName, RouteConfig, Task

MAX_TAGS = 16
MAX_TAG_LENGTH = 64


@dataclass(frozen=True, slots=True)
class CoEOverrides:
    """The body's ``coe`` extension, already validated at the edge."""

    labels: tuple[str, ...] | None = None
    task: Task | None = None
    threshold: float | None = None
    max_tier: int | None = None
    policy: PolicyName | None = None


@dataclass(frozen=True, slots=True)
class CascadePlan:
    route_name: str
    route: RouteConfig
    spec: AnswerSpec
    threshold: float
    policy: PolicyName
    max_tier: int
    tags: tuple[str, ...]

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        return self.route.tiers[: self.max_tier + 1]


def make_plan(
    route_name: str,
    route: RouteConfig,
    body: CoEOverrides,
    headers: Mapping[str, str],
) -> CascadePlan:
    task = body.task or route.task
    labels = body.labels if body.labels is not None else _route_labels(route, task)
    if task in ("classify", "choice") and not labels:
        raise BadRequest(f"task {task!r} needs labels", param="coe.labels")
    if task == "regex" and not route.pattern:
        # The body cannot carry a pattern: without the route's, no answer could ever parse.
        raise BadRequest(
            f"task 'regex' needs a pattern, and route {route_name!r} has none", param="coe.task"
        )
    threshold = body.threshold if body.threshold is not None else route.threshold
    policy: PolicyName = body.policy or route.policy
    max_tier = body.max_tier if body.max_tier is not None else len(route.tiers) - 1

    if (raw := headers.get("x-coe-threshold")) is not None:
        threshold = _header(raw, "x-coe-threshold", parse_threshold)
    if (raw := headers.get("x-coe-policy")) is not None:
        policy = _header(raw, "x-coe-policy", _parse_policy)
    if (raw := headers.get("x-coe-max-tier")) is not None:
        max_tier = _header(raw, "x-coe-max-tier", _parse_tier)
    tags = _parse_tags(headers.get("x-coe-tags", ""))

    return CascadePlan(
        route_name=route_name,
        route=route,
        spec=AnswerSpec(
            task=task,
            labels=labels,
            pattern=route.pattern,
            text_similarity=route.text_similarity,
        ),
        threshold=threshold,
        policy=policy,
        max_tier=min(max_tier, len(route.tiers) - 1),
        tags=tags,
    )


def _route_labels(route: RouteConfig, task: Task) -> tuple[str, ...]:
    if task == "classify":
        return route.labels
    if task == "choice":
        return route.choices or ("A", "B", "C", "D")
    return ()


def _header(raw: str, name: str, parse: Any) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise BadRequest(f"header {name}: {exc}", param=name, code="invalid_header") from None


def _parse_policy(raw: str) -> PolicyName:
    value = raw.strip().lower()
    if value == "vote":
        return "vote"
    if value == "confidence":
        return "confidence"
    raise ValueError(f"{raw!r} is not 'vote' or 'confidence'")


def _parse_tier(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or len(text) > 4:
        raise ValueError(f"{raw!r} is not a tier index (0, 1, …)")
    return int(text)


def _parse_tags(raw: str) -> tuple[str, ...]:
    tags = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    if len(tags) > MAX_TAGS:
        raise BadRequest(
            f"header x-coe-tags: at most {MAX_TAGS} tags", param="x-coe-tags", code="invalid_header"
        )
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH or not tag.isprintable():
            raise BadRequest(
                f"header x-coe-tags: tag {tag[:20]!r}… must be printable and at most "
                f"{MAX_TAG_LENGTH} characters",
                param="x-coe-tags",
                code="invalid_header",
            )
    return tags
