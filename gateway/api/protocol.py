"""OpenAI's chat-completion request as the gateway accepts it, and the answers it sends back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.config import PolicyName, Task
from gateway.errors import BadRequest
from gateway.plan import CoEOverrides
from policies.threshold import parse_threshold

if TYPE_CHECKING:
    from gateway.outcome import RequestOutcome

# Per-request labels are compiled into matchers; bound what one request can ask for.
MAX_LABELS = 256
MAX_LABEL_CHARS = 200

# Parameters that change what a cascade would have to vote on; refused rather than ignored.
_UNSUPPORTED = {
    "tools": "tool calls",
    "functions": "function calls",
    "audio": "audio output",
}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: str | list[dict[str, Any]] | None) -> Any:
        # The engine and the providers read a part's "text" as a string.
        if isinstance(content, list) and any(
            "text" in part and not isinstance(part["text"], str) for part in content
        ):
            raise ValueError("the text of a content part must be a string")
        return content


class CoEExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] | None = Field(default=None, min_length=1, max_length=MAX_LABELS)
    task: Task | None = None
    threshold: float | None = None
    max_tier: int | None = Field(default=None, ge=0)
    policy: PolicyName | None = None

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("threshold must be a number or a fraction such as 2/3")
        return parse_threshold(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and any(
            not label.strip() or len(label) > MAX_LABEL_CHARS for label in labels
        ):
            raise ValueError(f"labels must be non-empty strings of at most {MAX_LABEL_CHARS} chars")
        return labels

    def overrides(self) -> CoEOverrides:
        return CoEOverrides(
            labels=tuple(self.labels) if self.labels is not None else None,
            task=self.task,
            threshold=self.threshold,
            max_tier=self.max_tier,
            policy=self.policy,
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Clients send many optional OpenAI fields; those that don't change a vote are accepted.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0, le=65536)
    max_completion_tokens: int | None = Field(default=None, gt=0, le=65536)
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tool_choice: Any = None
    coe: CoEExtension | None = None

    def check_supported(self) -> None:
        if self.n is not None and self.n != 1:
            raise BadRequest("n must be 1: a cascade returns one decided answer", param="n")
        for field, what in _UNSUPPORTED.items():
            if (self.model_extra or {}).get(field):
                raise BadRequest(f"{what} are not supported on a cascade route", param=field)
        if self.tool_choice not in (None, "none"):
            raise BadRequest("tool calls are not supported on a cascade route", param="tool_choice")

    @property
    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def parse_chat_request(payload: Any) -> ChatCompletionRequest:
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        request = ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or None
        message = error["msg"].removeprefix("Value error, ")
        raise BadRequest(f"{param}: {message}" if param else message, param=param) from None
    request.check_supported()
    return request


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


OVERRIDE_HEADERS = {
    "x-coe-threshold": "θ for this request, as a decimal or a fraction such as 2/3",
    "x-coe-policy": "vote or confidence",
    "x-coe-max-tier": "the highest tier index (0-based) the request may reach",
    "x-coe-tags": "comma-separated cost-attribution tags (at most 16, 64 characters each)",
}


def chat_request_openapi() -> dict[str, Any]:
    """The chat route's body and override headers for the OpenAPI document: the route reads its
    raw body itself (for speed and OpenAI's error shape), so FastAPI cannot infer them."""
    schema = ChatCompletionRequest.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_refs(schema, definitions)}},
        },
        "parameters": [
            {"name": name, "in": "header", "required": False, "description": meaning,
             "schema": {"type": "string"}}
            for name, meaning in OVERRIDE_HEADERS.items()
        ],
    }


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    # The request models are not recursive, so every "$ref" can be replaced by its definition.
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline_refs(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, definitions) for item in node]
    return node
