"""A circuit breaker around one endpoint's provider, with half-open probing.

After ``failures`` consecutive failed calls the breaker opens: for ``cooldown_s`` every call returns
at once a record with status ``error`` and error ``circuit open``, and nothing reaches the upstream.
The record is still a vote for nothing in its tier, so θ's denominator keeps the endpoint: a tier
never looks unanimous because a member fell silent. After the cool-down the next call goes through
alone, as a probe (half-open): its success closes the breaker, its failure opens it for another
cool-down; calls arriving meanwhile are refused as while open.

A failure is a timeout, or an error other than a 4xx the request itself caused: a 400 or 422 says
the endpoint is up and one prompt was wrong, and one tenant's bad requests must not take an endpoint
away from everyone. A cancelled call (its tier decided without it) says nothing either way; a
cancelled probe leaves the next call to probe. Results of calls that started before the breaker last
changed state are ignored: they describe the endpoint as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from providers.base import CallRecord, CallRequest, Provider

if TYPE_CHECKING:
    from collections.abc import Callable

BreakerState = Literal["closed", "open", "half_open"]
CIRCUIT_OPEN = "circuit open"
# 4xx statuses that speak of the endpoint (overloaded, too slow), not of the request.
_ENDPOINT_4XX = frozenset({408, 429})

Verdict = Literal["success", "failure", "neutral"]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("a breaker opens after at least one failure")
        if self.cooldown_s <= 0:
            raise ValueError("a breaker's cool-down must be positive")


def verdict(record: CallRecord) -> Verdict:
    """What one finished call says about its endpoint's health."""
    if record.status in ("ok", "unparsable"):
        return "success"
    if record.status == "cancelled" or record.attempts == 0:
        # Stopped by the cascade, or refused before any request was sent.
        return "neutral"
    if record.status == "timeout":
        return "failure"
    http_status = record.http_status
    if http_status is not None and 400 <= http_status < 500:
        return "failure" if http_status in _ENDPOINT_4XX else "success"
    return "failure"


class BreakerProvider(Provider):
    """``inner`` behind a circuit breaker; ``on_state_change(endpoint, state)`` is called with
    ``closed`` at construction and on every change (for the ``coe_circuit_breaker_state`` gauge)."""

    def __init__(
        self,
        inner: Provider,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = inner.name
        self.inner = inner
        self._policy = policy
        self._clock = clock
        self._on_state_change = on_state_change
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        # Bumped on every change of state, so a late result of an earlier state is ignored.
        self._generation = 0
        if on_state_change is not None:
            on_state_change(self.name, "closed")

    @property
    def state(self) -> BreakerState:
        return self._state

    async def complete(self, request: CallRequest) -> CallRecord:
        generation = self._admit()
        if generation is None:
            return CallRecord(endpoint=self.name, status="error", error=CIRCUIT_OPEN, attempts=0)
        try:
            record = await self.inner.complete(request)
        except BaseException:
            # Cancelled: a neutral outcome, which frees a probe's place.
            self._settle(None, generation)
            raise
        self._settle(record, generation)
        return record

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _admit(self) -> int | None:
        """The generation the call runs in, or None when the breaker refuses it."""
        if self._state == "open":
            if self._clock() - self._opened_at < self._policy.cooldown_s:
                return None
            self._move("half_open")
        if self._state == "half_open":
            if self._probing:
                return None
            self._probing = True
        return self._generation

    def _settle(self, record: CallRecord | None, generation: int) -> None:
        if generation != self._generation:
            return
        outcome: Verdict = "neutral" if record is None else verdict(record)
        if self._state == "half_open":
            self._probing = False
            if outcome == "success":
                self._failures = 0
                self._move("closed")
            elif outcome == "failure":
                self._open()
            return
        if outcome == "success":
            self._failures = 0
        elif outcome == "failure":
            self._failures += 1
            if self._failures >= self._policy.failures:
                self._open()

    def _open(self) -> None:
        self._failures = 0
        self._opened_at = self._clock()
        self._move("open")

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        if self._on_state_change is not None:
            self._on_state_change(self.name, state)
