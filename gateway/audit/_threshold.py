"""θ from a target, live: each route with ``target_agreement`` serves with the θ that
``policies.target.choose_threshold`` picks from the ledger's audit rows (docs/api.md, "θ from a
target").

**When.** At every wall-clock multiple of the route's ``refresh_interval_s`` (Unix time), and
once as the app starts. A choice at tick ``T`` reads the rows of requests served before
``T − refresh_interval_s``, the latest ``evidence_window`` of each (tier, size, kind, votes, θ in
force), ordered by time and request id. Every replica on one ledger computes at the same ticks
from the same rows (an audit has one interval to land), so replicas agree on θ within one
interval. Nothing is kept between choices but the θ itself: a restarted or added replica serves
the same θ from its first choice, made before it serves.

**Reloads.** The controller reads the current config generation at every wake-up: routes added,
removed or changed by a reload are chosen for at their next tick. Until then a route keeps its θ
in force if its new ``thresholds`` still allow it, else it serves the strictest one allowed.

A ledger outage keeps the θ in force (logged); the next tick tries again.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from gateway.errors import LedgerUnavailable
from policies.target import choose_threshold, theta_text

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gateway.config import RouteConfig
    from gateway.ledger import Ledger
    from gateway.metrics import Metrics
    from gateway.reload import ConfigHolder
    from policies.target import ThresholdChoice

log = logging.getLogger("coe.threshold")

# With no target route, how long the controller sleeps before looking at the config again.
IDLE_S = 5.0


class ThresholdsInForce:
    """The θ each target route serves with now: set by the controller, read by every request."""

    def __init__(self) -> None:
        self._theta: dict[str, float] = {}

    def get(self, name: str, route: RouteConfig) -> float | None:
        """θ in force on route ``name`` (None: it has no target): the strictest allowed until a
        choice is made, or when the route's ``thresholds`` no longer allow the one made."""
        if route.target_agreement is None:
            return None
        theta = self._theta.get(name)
        return theta if theta in route.thresholds else max(route.thresholds)

    def put(self, name: str, theta: float) -> float | None:
        """Put θ in force; the previous one (None: none was chosen yet)."""
        previous = self._theta.get(name)
        self._theta[name] = theta
        return previous

    def keep_only(self, names: set[str]) -> None:
        for name in set(self._theta) - names:
            del self._theta[name]


class ThresholdController:
    """Re-chooses the θ of every target route; ``running`` must be open (the app's lifespan)."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        config: ConfigHolder,
        in_force: ThresholdsInForce,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._config = config
        self._in_force = in_force
        self._due: dict[str, float] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ThresholdController]:
        """Choose every target route's θ now, then at each of its ticks until exit."""
        await self.refresh()
        async with anyio.create_task_group() as group:
            group.start_soon(self._run)
            try:
                yield self
            finally:
                group.cancel_scope.cancel()

    async def refresh(self, now: float | None = None) -> dict[str, ThresholdChoice]:
        """Choose θ for every target route at its latest tick at or before ``now``; the choices
        made (a route whose ledger read failed keeps its θ and is left out)."""
        at = time.time() if now is None else now
        routes = self._routes()
        choices: dict[str, ThresholdChoice] = {}
        for name, route in routes.items():
            tick = _tick(at, route.refresh_interval_s)
            choice = await self._choose(name, route, tick)
            if choice is not None:
                choices[name] = choice
            self._due[name] = tick + route.refresh_interval_s
        return choices

    def _routes(self) -> dict[str, RouteConfig]:
        """The current generation's target routes; routes no longer targeted are forgotten."""
        routes = {
            name: route
            for name, route in self._config.current.settings.routes.items()
            if route.target_agreement is not None
        }
        for name in set(self._due) - set(routes):
            del self._due[name]
            self._metrics.forget_threshold(name)
        self._in_force.keep_only(set(routes))
        return routes

    async def _run(self) -> None:
        while True:
            routes = self._routes()
            now = time.time()
            for name, route in routes.items():
                if name not in self._due:  # added by a reload
                    self._due[name] = _next_tick(now, route.refresh_interval_s)
            wake = min((self._due[name] for name in routes), default=now + IDLE_S)
            await anyio.sleep(max(0.0, wake - now))
            for name, route in self._routes().items():
                due, now = self._due.get(name), time.time()
                if due is not None and due <= now:
                    # The latest tick, not the one due: woken late, choose as the others do now.
                    await self._choose(name, route, _tick(now, route.refresh_interval_s))
                    self._due[name] = _next_tick(now, route.refresh_interval_s)

    async def _choose(self, name: str, route: RouteConfig, tick: float) -> ThresholdChoice | None:
        target = route.target_agreement
        assert target is not None
        until = datetime.fromtimestamp(tick - route.refresh_interval_s, UTC)
        try:
            rows = await self._ledger.recent_audits(
                name, until=until, per_stratum=route.evidence_window
            )
            # Bounds over thousands of rows: off the event loop.
            choice = await anyio.to_thread.run_sync(
                lambda: choose_threshold(
                    route.thresholds, rows, target, route.confidence, route.min_samples,
                    tier_sizes={tier: len(t) for tier, t in enumerate(route.tiers[:-1])},
                    window=route.evidence_window,
                )
            )
        except LedgerUnavailable:
            log.warning("θ of route %s not re-chosen: the ledger is unavailable", name)
            return None
        except Exception:  # one route's failure must not stop the controller (it runs on)
            log.exception("θ of route %s not re-chosen", name)
            return None
        previous = self._in_force.put(name, choice.theta)
        self._metrics.set_threshold(name, choice.theta)
        if previous != choice.theta:
            log.info(
                "route %s now serves with θ=%s (was %s): %s",
                name,
                theta_text(choice.theta),
                "none chosen" if previous is None else theta_text(previous),
                choice.reason,
                extra={
                    "route": name,
                    "threshold": theta_text(choice.theta),
                    "previous_threshold": None if previous is None else theta_text(previous),
                    "fallback": choice.fallback,
                    "reason": choice.reason,
                },
            )
        return choice


def _tick(now: float, interval: float) -> float:
    """The latest wall-clock multiple of ``interval`` at or before ``now``."""
    return math.floor(now / interval) * interval


def _next_tick(now: float, interval: float) -> float:
    return _tick(now, interval) + interval
