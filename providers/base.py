"""The one seam between the engine and an upstream: ``Provider.complete``.

A provider turns a ``CallRequest`` into a ``CallRecord`` and never raises for upstream trouble:
failures come back as records with status ``error`` or ``timeout``, so the engine can count them as
votes for nothing. Only cancellation propagates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from policies.logprobs import TokenLogprob, mean_logprob

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CallRecord", "CallRequest", "CallStatus", "Provider", "TokenLogprob"]

CallStatus = Literal["ok", "error", "timeout", "cancelled", "unparsable"]


@dataclass(frozen=True, slots=True)
class CallRequest:
    messages: tuple[Mapping[str, Any], ...]
    max_tokens: int = 16
    temperature: float = 0.0
    # The closed answer set of the route (labels or choices); providers that can constrain
    # decoding to it (vLLM's structured outputs, llama.cpp's grammar) do.
    answer_set: tuple[str, ...] = ()
    # The client's structured-output format as OpenAI's chat ``response_format`` (a json_schema
    # whose one property is the answer); hosted OpenAI-style upstreams (``kind = "openai"``) are
    # sent it, the others are constrained by ``answer_set``.
    response_format: Mapping[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 5
    request_id: str = ""
    # Extra HTTP headers for the upstream request: the trace context (W3C ``traceparent``) of
    # this call's span when the gateway traces (gateway.telemetry). HTTP providers send them.
    headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class CallRecord:
    endpoint: str
    status: CallStatus
    text: str | None = None
    # None when the upstream reported no usage; billing then estimates and says so.
    tokens_in: int | None = None
    tokens_out: int | None = None
    # The parts of ``tokens_in`` the upstream read from / wrote to its prompt cache, which hosted
    # APIs price apart (``policies.pricing``); None when it reported none. ``cache_write_1h_tokens``
    # is the part of the writes kept for an hour (Anthropic's ``ttl = "1h"``), priced higher.
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    latency_ms: float = 0.0
    error: str | None = None
    attempts: int = 1
    upstream_request_id: str | None = None
    # The upstream's HTTP status, when an HTTP answer came back (the breaker reads it).
    http_status: int | None = None
    # Filled by the engine and billing after the call returns.
    tier: int = 0
    answer: str | None = None
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    cost_estimated: bool = False
    # Characters of the client's messages: billing estimates tokens from them without usage.
    prompt_chars: int = 0

    @property
    def mean_logprob(self) -> float | None:
        return mean_logprob(self.logprobs)


class Provider(ABC):
    """One upstream endpoint. Subclasses know their upstream's dialect and nothing else."""

    name: str

    @abstractmethod
    async def complete(self, request: CallRequest) -> CallRecord:
        """Call the upstream once (with its retry rules) and describe what happened."""

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing of their own
        """Release what the provider holds; the shared HTTP client is closed by its owner."""
