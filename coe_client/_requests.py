"""Requests the helpers send and results they read: headers, bodies, the ``coe`` object."""

from __future__ import annotations

import os
from datetime import datetime
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from openai import APIResponseValidationError

from coe_client._types import CallInfo, CoEResult, Policy, Threshold, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

ENV_BASE_URL = "COE_BASE_URL"
ENV_API_KEY = "COE_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
COSTS_PATH = "/coe/costs"
# A gateway without tenants needs no key, but the SDK insists on one. Never fall back to
# OPENAI_API_KEY as the SDK would: that would hand an OpenAI key to the gateway.
_NO_KEY = "no-key"


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
    """The per-request override headers (docs/api.md, "Headers") for the given keywords."""
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


def resolve_base_url(base_url: Any) -> Any:
    """The argument, else ``$COE_BASE_URL``, else ``DEFAULT_BASE_URL`` (never ``OPENAI_BASE_URL``).
    The SDK's ``copy`` passes its URL object, which is kept as it is."""
    return base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL


def resolve_api_key(api_key: Any) -> Any:
    """The argument (a key or the SDK's key provider), else ``$COE_API_KEY``, else a placeholder
    (never ``OPENAI_API_KEY``)."""
    return api_key or os.environ.get(ENV_API_KEY) or _NO_KEY


def route_or_default(given: str | None, default: str | None) -> str:
    route = given or default
    if not route:
        raise ValueError("no route: pass route=... or construct the client with route=...")
    return route


def coe_body(task: Literal["classify", "choice"], answers: Sequence[str] | None) -> dict[str, Any]:
    if isinstance(answers, str):
        raise TypeError("labels/choices must be a sequence of strings, not one string")
    body: dict[str, Any] = {"task": task}
    if answers is not None:
        body["labels"] = list(answers)
    return body


def chat_request(
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


def costs_params(
    since: datetime | str | None, until: datetime | str | None, group_by: str, tenant: str | None
) -> dict[str, str]:
    params = {"group_by": group_by}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            params[name] = value.isoformat() if isinstance(value, datetime) else value
    if tenant is not None:
        params["tenant"] = tenant
    return params


def read_result(completion: ChatCompletion, request_id: str | None, response: Any) -> CoEResult:
    """Read the decided answer and the ``coe`` object; a reply without them is not a gateway's."""
    coe = (completion.model_extra or {}).get("coe")
    label = completion.choices[0].message.content if completion.choices else None
    if not isinstance(coe, dict) or label is None:
        raise APIResponseValidationError(
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
        raise APIResponseValidationError(
            response, coe, message=f"the reply's `coe` object is malformed: {exc!r}"
        ) from exc
