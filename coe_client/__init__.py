"""A Python client for CoE Gateway, built on the official ``openai`` SDK.

``CoEClient`` (async) and ``CoE`` (sync) wrap ``openai.AsyncOpenAI`` / ``openai.OpenAI``, exposed as
``.openai`` so every OpenAI call still works, and add three helpers: ``classify``, ``choose`` and
``costs``. Overrides travel as the ``x-coe-*`` headers of CONTRACT.md, labels and task in the body's
``coe`` extension; errors surface as the SDK's own exceptions (``openai.BadRequestError``, …).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import openai

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

ENV_BASE_URL = "COE_BASE_URL"
ENV_API_KEY = "COE_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
COSTS_PATH = "/coe/costs"
# A gateway without tenants needs no key, but the SDK insists on one. Never fall back to
# OPENAI_API_KEY as the SDK would: that would hand an OpenAI key to the gateway.
_NO_KEY = "no-key"

Decision = Literal["agreed", "escalated", "last_tier"]
Policy = Literal["vote", "confidence"]
GroupBy = Literal["route", "tier", "endpoint", "day", "tag"]
Threshold = float | Fraction | str


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One upstream call the gateway made for a request."""

    endpoint: str
    tier: int
    status: str  # "ok" | "error" | "cancelled" | "unparsable"
    answer: str | None
    latency_ms: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens summed over every upstream call of the request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class CoEResult:
    """The decided answer and how the cascade reached it (the response's ``coe`` object)."""

    label: str
    tier: int
    decision: Decision
    agreement: float
    threshold: float
    votes: Mapping[str, int]
    calls: tuple[CallInfo, ...]
    cost_usd: float
    request_id: str | None
    usage: Usage


class CoEClient:
    """Async client: ``async with CoEClient() as coe: result = await coe.classify(...)``.

    ``base_url`` is the gateway's ``/v1`` root (default: ``$COE_BASE_URL``, else
    ``http://127.0.0.1:8000/v1``); ``api_key`` defaults to ``$COE_API_KEY``. ``route`` is the
    default route for the helpers; ``openai_options`` go to ``openai.AsyncOpenAI`` as they are
    (``timeout``, ``max_retries``, ``http_client``, ``default_headers``, …).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        route: str | None = None,
        **openai_options: Any,
    ) -> None:
        url, key = _resolve(base_url, api_key)
        self.openai = openai.AsyncOpenAI(base_url=url, api_key=key, **openai_options)
        self.route = route

    async def __aenter__(self) -> CoEClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.openai.close()

    async def classify(
        self,
        prompt: str | Sequence[ChatCompletionMessageParam],
        *,
        labels: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Label ``prompt`` with one of ``labels`` (default: the route's labels)."""
        request = _chat_request(
            _route(route, self.route), prompt, _coe_body("classify", labels),
            threshold, policy, max_tier, tags,
        )
        raw = await self.openai.chat.completions.with_raw_response.create(**request)
        return _result(raw.parse(), raw.request_id, raw.http_response)

    async def choose(
        self,
        question: str | Sequence[ChatCompletionMessageParam],
        *,
        choices: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Answer a multiple-choice ``question`` with one of ``choices`` (default: the route's,
        A–D unless it says otherwise)."""
        request = _chat_request(
            _route(route, self.route), question, _coe_body("choice", choices),
            threshold, policy, max_tier, tags,
        )
        raw = await self.openai.chat.completions.with_raw_response.create(**request)
        return _result(raw.parse(), raw.request_id, raw.http_response)

    async def costs(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: GroupBy = "route",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The cost report (``GET /v1/coe/costs``) of the caller's tenant, or of ``tenant``
        for an admin key."""
        params = _costs_params(since, until, group_by, tenant)
        report: dict[str, Any] = await self.openai.get(
            COSTS_PATH, cast_to=dict[str, Any], options={"params": params}
        )
        return report


class CoE:
    """Synchronous twin of ``CoEClient`` for scripts and notebooks, on ``openai.OpenAI``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        route: str | None = None,
        **openai_options: Any,
    ) -> None:
        url, key = _resolve(base_url, api_key)
        self.openai = openai.OpenAI(base_url=url, api_key=key, **openai_options)
        self.route = route

    def __enter__(self) -> CoE:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.openai.close()

    def classify(
        self,
        prompt: str | Sequence[ChatCompletionMessageParam],
        *,
        labels: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Label ``prompt`` with one of ``labels`` (default: the route's labels)."""
        request = _chat_request(
            _route(route, self.route), prompt, _coe_body("classify", labels),
            threshold, policy, max_tier, tags,
        )
        raw = self.openai.chat.completions.with_raw_response.create(**request)
        return _result(raw.parse(), raw.request_id, raw.http_response)

    def choose(
        self,
        question: str | Sequence[ChatCompletionMessageParam],
        *,
        choices: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Answer a multiple-choice ``question`` with one of ``choices``."""
        request = _chat_request(
            _route(route, self.route), question, _coe_body("choice", choices),
            threshold, policy, max_tier, tags,
        )
        raw = self.openai.chat.completions.with_raw_response.create(**request)
        return _result(raw.parse(), raw.request_id, raw.http_response)

    def costs(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: GroupBy = "route",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The cost report (``GET /v1/coe/costs``)."""
        params = _costs_params(since, until, group_by, tenant)
        report: dict[str, Any] = self.openai.get(
            COSTS_PATH, cast_to=dict[str, Any], options={"params": params}
        )
        return report


def format_threshold(value: Threshold) -> str:
    """θ as the ``x-coe-threshold`` header carries it: a decimal, or a fraction string as given."""
    if isinstance(value, bool):
        raise TypeError("threshold must be a number or a fraction such as '2/3', not a bool")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, int):
        return str(value)
    # repr is the shortest text that reads back as the same float.
    return repr(float(value))


def override_headers(
    threshold: Threshold | None = None,
    policy: Policy | None = None,
    max_tier: int | None = None,
    tags: Sequence[str] | None = None,
) -> dict[str, str]:
    """The CONTRACT.md per-request override headers for the given keywords."""
    headers: dict[str, str] = {}
    if threshold is not None:
        headers["x-coe-threshold"] = format_threshold(threshold)
    if policy is not None:
        headers["x-coe-policy"] = policy
    if max_tier is not None:
        if isinstance(max_tier, bool) or max_tier < 0:
            raise ValueError("max_tier must be a tier index (0, 1, …)")
        headers["x-coe-max-tier"] = str(max_tier)
    if tags:
        cleaned = [tag.strip() for tag in tags]
        if any(not tag or "," in tag for tag in cleaned):
            raise ValueError("tags must be non-empty and must not contain commas")
        headers["x-coe-tags"] = ",".join(cleaned)
    return headers


def _resolve(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    key = api_key or os.environ.get(ENV_API_KEY) or _NO_KEY
    return url, key


def _route(given: str | None, default: str | None) -> str:
    route = given or default
    if not route:
        raise ValueError("no route: pass route=... or construct the client with route=...")
    return route


def _coe_body(task: Literal["classify", "choice"], answers: Sequence[str] | None) -> dict[str, Any]:
    if isinstance(answers, str):
        raise TypeError("labels/choices must be a sequence of strings, not one string")
    body: dict[str, Any] = {"task": task}
    if answers is not None:
        body["labels"] = list(answers)
    return body


def _chat_request(
    route: str,
    prompt: str | Sequence[ChatCompletionMessageParam],
    coe: dict[str, Any],
    threshold: Threshold | None,
    policy: Policy | None,
    max_tier: int | None,
    tags: Sequence[str] | None,
) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return {
        "model": route,
        "messages": messages,
        "extra_body": {"coe": coe},
        "extra_headers": override_headers(threshold, policy, max_tier, tags),
    }


def _costs_params(
    since: datetime | str | None, until: datetime | str | None, group_by: str, tenant: str | None
) -> dict[str, str]:
    params = {"group_by": group_by}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            params[name] = value.isoformat() if isinstance(value, datetime) else value
    if tenant is not None:
        params["tenant"] = tenant
    return params


def _result(completion: ChatCompletion, request_id: str | None, response: Any) -> CoEResult:
    """Read the decided answer and the ``coe`` object; a reply without them is not a gateway's."""
    coe = (completion.model_extra or {}).get("coe")
    label = completion.choices[0].message.content if completion.choices else None
    if not isinstance(coe, dict) or label is None:
        raise openai.APIResponseValidationError(
            response,
            completion.model_dump(),
            message="the reply has no answer or no `coe` object: is base_url a CoE Gateway?",
        )
    try:
        calls = tuple(
            CallInfo(
                endpoint=str(c["endpoint"]),
                tier=int(c["tier"]),
                status=str(c["status"]),
                answer=c.get("answer"),
                latency_ms=float(c["latency_ms"]),
                cost_usd=float(c["cost_usd"]),
            )
            for c in coe.get("calls", ())
        )
        usage = completion.usage
        return CoEResult(
            label=label,
            tier=int(coe["tier"]),
            decision=coe["decision"],
            agreement=float(coe["agreement"]),
            threshold=float(coe["threshold"]),
            votes=MappingProxyType({str(k): int(v) for k, v in coe.get("votes", {}).items()}),
            calls=calls,
            cost_usd=float(coe["cost_usd"]),
            request_id=request_id,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                total_tokens=usage.total_tokens if usage else 0,
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise openai.APIResponseValidationError(
            response, coe, message=f"the reply's `coe` object is malformed: {exc!r}"
        ) from exc
