"""Each call's share of a self-hosted endpoint's GPU time.

vLLM batches concurrent requests, so n calls in flight together share the GPU: charging each its
wall time would bill the hour n times over. Per endpoint a virtual clock advances at 1/n(t) while
n calls are in flight (processor sharing); a call's share is the clock's advance between its begin
and its end. The shares of all calls sum to the time the endpoint was busy.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ShareTicket:
    """One call in flight on one endpoint, from ``GpuShareMeter.begin``."""

    endpoint: str
    serial: int
    virtual_start: float


@dataclass(slots=True)
class _Endpoint:
    in_flight: set[int] = field(default_factory=set)
    virtual: float = 0.0
    updated_at: float = 0.0

    def advance(self, now: float) -> None:
        # A clock read out of order must not run the virtual clock backwards.
        if now > self.updated_at:
            if self.in_flight:
                self.virtual += (now - self.updated_at) / len(self.in_flight)
            self.updated_at = now


class GpuShareMeter:
    """Per endpoint, a virtual clock advancing at 1/n(t) while n calls are in flight; a call's
    share is the clock's advance between its begin and end. Times are passed in (no clock
    inside). O(1) per operation; not thread-safe (one event loop owns it)."""

    __slots__ = ("_endpoints", "_serial")

    def __init__(self) -> None:
        self._endpoints: dict[str, _Endpoint] = {}
        self._serial = 0

    def begin(self, endpoint: str, now: float) -> ShareTicket:
        state = self._endpoints.setdefault(endpoint, _Endpoint())
        if not state.in_flight:
            # Idle: restart the clock so that it stays small and exact over a long life.
            state.virtual, state.updated_at = 0.0, now
        state.advance(now)
        self._serial += 1
        state.in_flight.add(self._serial)
        return ShareTicket(endpoint=endpoint, serial=self._serial, virtual_start=state.virtual)

    def end(self, ticket: ShareTicket, now: float) -> float:
        """The call's share in seconds; a ticket can be ended once."""
        state = self._endpoints.get(ticket.endpoint)
        if state is None or ticket.serial not in state.in_flight:
            raise ValueError(f"ticket {ticket.serial} on {ticket.endpoint!r} is not in flight")
        state.advance(now)
        state.in_flight.remove(ticket.serial)
        return state.virtual - ticket.virtual_start
