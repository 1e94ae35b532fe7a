"""One request's cascade plan: the route's defaults, overridden by the body's ``coe`` object,
overridden in turn by the ``x-coe-*`` headers (docs/api.md, "Headers": order of precedence). On a
route with target_agreement the route's θ is the one its audit put in force."""

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
class OutputFormat:
    """A structured-output request (``gateway.api.structured``), in the plan's terms."""

    # The answer field's enum: the request's label set (task classify); None when it names none.
    labels: tuple[str, ...] | None
    # The request's param that carried it, named by a 400.
    param: str
    # The JSON field upstreams answer in, read first (``AnswerSpec.json_field``).
    field: str | None = None
    # OpenAI's chat ``response_format``, forwarded to upstreams that take it (``kind = "openai"``).
    response_format: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CascadePlan:
    route_name: str
    route: RouteConfig
    spec: AnswerSpec
    threshold: float
    policy: PolicyName
    max_tier: int
    tags: tuple[str, ...]
    # The client's structured-output format, for ``CallRequest.response_format``; None for text.
    response_format: Mapping[str, Any] | None = None
    # On a route with target_agreement, the θ its audit put in force (the route's θ here).
    threshold_in_force: float | None = None

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        return self.route.tiers[: self.max_tier + 1]


def make_plan(
    route_name: str,
    route: RouteConfig,
    body: CoEOverrides,
    headers: Mapping[str, str],
    output: OutputFormat | None = None,
    threshold_in_force: float | None = None,
) -> CascadePlan:
    """``threshold_in_force``: the θ a route with target_agreement serves with now (the
    controller's, gateway.audit); it takes the place of ``route.threshold``, and the body's and the
    header's θ still win over it."""
    task = body.task or route.task
    labels = body.labels if body.labels is not None else _route_labels(route, task)
    if output is not None and output.labels is not None:
        task, labels = _schema_labels(route_name, body, task, labels, output)
    if task in ("classify", "choice") and not labels:
        raise BadRequest(f"task {task!r} needs labels", param="coe.labels")
    if task == "regex" and not route.pattern:
        # The body cannot carry a pattern: without the route's, no answer could ever parse.
        raise BadRequest(
            f"task 'regex' needs a pattern, and route {route_name!r} has none", param="coe.task"
        )
    threshold = threshold_in_force if threshold_in_force is not None else route.threshold
    if body.threshold is not None:
        threshold = body.threshold
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
            json_field=output.field if output is not None else None,
        ),
        threshold=threshold,
        policy=policy,
        max_tier=min(max_tier, len(route.tiers) - 1),
        tags=tags,
        response_format=output.response_format if output is not None else None,
        threshold_in_force=threshold_in_force,
    )


def _schema_labels(
    route_name: str,
    body: CoEOverrides,
    task: Task,
    labels: tuple[str, ...],
    output: OutputFormat,
) -> tuple[Task, tuple[str, ...]]:
    """The task and labels when a schema's enum names the labels: the enum's, unless the route
    (or ``coe.labels``) fixes a set, which must then be the same set (spelled as configured)."""
    enum = output.labels or ()
    if body.task is not None and body.task not in ("classify", "choice"):
        raise BadRequest(
            f"{output.param} names labels, so the task is classify, not {body.task!r}",
            param="coe.task", code="invalid_value",
        )
    if task in ("classify", "choice") and labels:
        if set(labels) != set(enum):
            source = (
                "coe.labels" if body.labels is not None else f"the labels of route {route_name!r}"
            )
            raise BadRequest(
                f"the enum of {output.param} {list(enum)} and {source} {list(labels)} differ: "
                "they must be the same set",
                param=output.param, code="invalid_value",
            )
        return task, labels
    return "classify", enum


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
