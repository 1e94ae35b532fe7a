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
        "threshold_in_force": (
            None if outcome.threshold_in_force is None else round(outcome.threshold_in_force, 4)
        ),
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


def completion_body(outcome: RequestOutcome, content: str | None) -> dict[str, Any]:
    """The chat completion; ``content`` is the decided answer as delivered (JSON for structured
    outputs, else the label itself)."""
    return {
        "id": f"chatcmpl-{outcome.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": outcome.route,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage_object(outcome),
        "coe": coe_object(outcome),
    }


def completion_chunks(outcome: RequestOutcome, content: str | None) -> list[dict[str, Any]]:
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
                "delta": {"role": "assistant", "content": content},
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


# -- The Responses API (``POST /v1/responses``) --


def response_object(
    outcome: RequestOutcome, text: str | None, echo: dict[str, Any], *, done: bool
) -> dict[str, Any]:
    """OpenAI's ``Response``: ``echo`` holds the request's fields a response repeats
    (``instructions``, ``metadata``, ``text``, …). Before ``done`` (the stream's first events) it
    is ``in_progress``, with no output and no usage. ``coe`` rides along as an extension field, as
    on a chat completion (the SDK keeps unknown fields: ``response.coe``)."""
    created = int(outcome.created_at.timestamp())
    body: dict[str, Any] = {
        "id": f"resp_{outcome.request_id}",
        "object": "response",
        "created_at": created,
        "status": "completed" if done else "in_progress",
        "completed_at": int(time.time()) if done else None,
        "error": None,
        "incomplete_details": None,
        "model": outcome.route,
        "output": [response_message(outcome, text, done=True)] if done else [],
        "parallel_tool_calls": False,
        "previous_response_id": None,
        "store": False,
        "tool_choice": "none",
        "tools": [],
        "truncation": "disabled",
        "usage": response_usage(outcome) if done else None,
        **echo,
    }
    if done:
        body["coe"] = coe_object(outcome)
    return body


def response_message(outcome: RequestOutcome, text: str | None, *, done: bool) -> dict[str, Any]:
    return {
        "id": f"msg_{outcome.request_id}",
        "type": "message",
        "role": "assistant",
        "status": "completed" if done else "in_progress",
        "content": [output_text(text or "")] if done else [],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_usage(outcome: RequestOutcome) -> dict[str, Any]:
    prompt, completion = outcome.tokens_in, outcome.tokens_out
    cached = sum(c.cache_read_tokens or 0 for c in outcome.calls)
    written = sum(c.cache_write_tokens or 0 for c in outcome.calls)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_events(
    outcome: RequestOutcome, text: str | None, echo: dict[str, Any]
) -> list[dict[str, Any]]:
    """The Responses stream of a decided answer, as OpenAI sends one message of one text part:
    created, in_progress, the item and its part opened, the text (one delta), closed, completed;
    ``sequence_number`` counts from 0."""
    answer = text or ""
    item_id = f"msg_{outcome.request_id}"
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created",
         "response": response_object(outcome, text, echo, done=False)},
        {"type": "response.in_progress",
         "response": response_object(outcome, text, echo, done=False)},
        {"type": "response.output_item.added", "output_index": 0,
         "item": response_message(outcome, text, done=False)},
        {"type": "response.content_part.added", **at, "part": output_text("")},
        {"type": "response.output_text.delta", **at, "delta": answer, "logprobs": []},
        {"type": "response.output_text.done", **at, "text": answer, "logprobs": []},
        {"type": "response.content_part.done", **at, "part": output_text(answer)},
        {"type": "response.output_item.done", "output_index": 0,
         "item": response_message(outcome, text, done=True)},
        {"type": "response.completed",
         "response": response_object(outcome, text, echo, done=True)},
    ]
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]
