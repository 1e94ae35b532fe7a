"""What the helpers return: the decided answer and how the cascade reached it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

Decision = Literal["agreed", "escalated", "last_tier"]
Policy = Literal["vote", "confidence"]
GroupBy = Literal["route", "tier", "endpoint", "day", "tag"]
Threshold = float | Fraction | str


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One upstream call the gateway made for a request."""

    endpoint: str
    tier: int
    status: str  # "ok" | "error" | "timeout" | "cancelled" | "unparsable"
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
