"""Whether this worker's event loop is contended, measured by how late it wakes a timer.

Every request of every tenant is parsed, routed, billed and answered on one event loop per worker.
When that loop is short of CPU (a tenant's flood of quick requests, other processes on the
machine), each request waits behind all the others, a well-behaved tenant's as long as the
flood's. A timer of ``PROBE_S`` that fires more than ``server.fair_share_loop_lag_ms`` late says
so. One late timer is enough: it may be a one-off stall (the process not scheduled on a busy
machine), and then a tenant over its share is refused for a second it did not need to be (a few
per cent of a 10x tenant's requests in bench/abuse.py), but a loop that is short of CPU is caught
at its first late timer. Unlike a count of requests in flight, the lag does not grow with the
upstreams' latency (a slow model holds many requests in flight on an idle loop), so its threshold
needs no tuning to the deployment; ``gateway.tenants.TenantLimiter`` gives each active tenant a
fair share while it lasts.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

# A timer every 25 ms: 40 wake-ups a second, a negligible cost, and a lag of a few tens of
# milliseconds is seen within one or two of them.
PROBE_S = 0.025
# Contention lasts this long after the last late timer, so tenants' shares do not flap between two
# probes of a loop that is late in bursts.
HOLD_S = 1.0

log = logging.getLogger("coe.contention")


class LoopLag:
    """Until when the loop counts as contended, from the lag of its timers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._contended_until = -math.inf

    def contended(self) -> bool:
        return self._clock() < self._contended_until

    def observe(self, lag_s: float, threshold_s: float) -> None:
        """One timer fired ``lag_s`` late; past ``threshold_s`` (0: never) the loop is contended
        for ``HOLD_S`` from now."""
        if not threshold_s or lag_s <= threshold_s:
            return
        if not self.contended():
            log.warning(
                "event loop %.0f ms late: tenants over their fair share of requests in flight "
                "are refused (server.fair_share_loop_lag_ms)",
                lag_s * 1000,
            )
        self._contended_until = self._clock() + HOLD_S

    @asynccontextmanager
    async def running(self, threshold_s: Callable[[], float]) -> AsyncIterator[LoopLag]:
        """Probe the loop for the block; ``threshold_s`` is read at each probe, so a reload's new
        threshold applies from the next one."""

        async def probe() -> None:
            while True:
                started = self._clock()
                await anyio.sleep(PROBE_S)
                self.observe(self._clock() - started - PROBE_S, threshold_s())

        async with anyio.create_task_group() as group:
            group.start_soon(probe)
            try:
                yield self
            finally:
                group.cancel_scope.cancel()
