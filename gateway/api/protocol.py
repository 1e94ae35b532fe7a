"""The answers the gateway sends back: completion bodies, stream chunks, the ``coe`` object, the
decision headers and OpenAI's error shape (the request side: ``chat_request``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.outcome import RequestOutcome


def decision_headers(outcome: RequestOutcome) -> dict[str, str]:
    """What the cascade decided and spent, on every answer the engine ran for: a 200, and the
    502 or 504 of a cascade that reached a tier and paid for its calls without an answer."""
    return {
        "x-coe-tier": str(outcome.tier),
        "x-coe-agreement": f"{outcome.agreement:.4f}",
        "x-coe-cost-usd": f"{outcome.cost_usd:.10f}",
    }


def coe_object(outcome: RequestOutcome) -> dict[str, Any]:
    return {
        "route": outcome.route,
        "tier": outcome.tier,
        "decision": outcome.decision,
        "agreement": round(outcome.agreement, 4),
        "threshold": round(outcome.threshold, 4),
        "votes": outcome.votes,
        "calls": [
            {
                "endpoint": c.endpoint,
                "tier": c.tier,
                # The contract names four states; a timeout is an error to the client.
                "status": "error" if c.status == "timeout" else c.status,
                "answer": c.answer,
                "latency_ms": round(c.latency_ms, 2),
                "cost_usd": c.cost_usd,
            }
            for c in outcome.calls
        ],
        "cost_usd": outcome.cost_usd,
    }


def usage_object(outcome: RequestOutcome) -> dict[str, int]:
    prompt, completion = outcome.tokens_in, outcome.tokens_out
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(outcome: RequestOutcome) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{outcome.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": outcome.route,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.answer},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_object(outcome),
        "coe": coe_object(outcome),
    }


def completion_chunks(outcome: RequestOutcome) -> list[dict[str, Any]]:
    """The stream: the decided answer in one chunk, then a last chunk with usage and ``coe``."""
    base = {
        "id": f"chatcmpl-{outcome.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": outcome.route,
    }
    answer = {
        **base,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": outcome.answer},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    last = {**base, "choices": [], "usage": usage_object(outcome), "coe": coe_object(outcome)}
    return [answer, last]


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
