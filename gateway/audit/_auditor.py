"""The live audit: sample answers given below the top tier and re-ask the top tier in the
background; record the census of requests that escalated (docs/api.md, "Audit").

``Auditor.after_serving`` runs on the request path once its outcome is recorded, and never awaits:
it draws, checks the bounds and hands the audit to a task group the app's lifespan owns, so no
response waits for an audit or is changed by one. An audit past its route's ``max_in_flight``
(counted per route, so routes do not crowd each other out) is dropped, and one drawn while the
route's audit spend is past ``max_share_of_spend`` of its serving spend is paused; both counted,
never queued. Census rows go through a bounded buffer to one writer task. While the ledger is
known to be out no audit starts: its calls could not be recorded.

An audit runs the route's top tier through the engine with a plan of that tier alone and the
served request's θ, policy and answer spec, so normalisation and voting are the serving path's;
the top tier's answer is that tier's verdict. It runs on the config current when it starts (a
route reloaded away, or without ``[audit]`` any more, is not audited). ``bill_to = "tenant"``
reserves the audit's worst case from the tenant's budget, keeping the route's worst-case request
free on top (``BudgetGuard.reserve(headroom_usd=…)``), so audits stop before serving does;
``"operator"`` bills the audit's calls to the reserved tenant ``admin`` (the operator's own).
"""

from __future__ import annotations

import logging
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio

from gateway.audit._records import census_records, sample_record
from gateway.audit._spend import SpendShares
from gateway.config import ADMIN_TENANT
from gateway.errors import LedgerUnavailable, QuotaExceeded
from gateway.ledger import AuditRecord
from providers.prompting import prompt_chars

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from typing import Any

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from gateway.config import AuditConfig, RouteConfig
    from gateway.ledger import Ledger, Reservation
    from gateway.metrics import Metrics
    from gateway.outcome import RequestOutcome
    from gateway.plan import CascadePlan
    from gateway.reload import ConfigHolder, Generation

log = logging.getLogger("coe.audit")

# At shutdown, audits in flight get this long to finish and be recorded; then they are cancelled.
DRAIN_S = 5.0
# Census rows waiting for the writer; past it they are dropped (and counted), never queued.
CENSUS_BUFFER_ROWS = 10_000
CENSUS_BATCH_ROWS = 500
# An audit's request row is its served request's id with this suffix (parent_request_id links it).
AUDIT_ID_SUFFIX = ".audit"


@dataclass(frozen=True, slots=True)
class _Sample:
    served: RequestOutcome
    plan: CascadePlan
    messages: Sequence[Mapping[str, Any]]
    max_tokens: int | None


def audited(route: RouteConfig) -> bool:
    """Whether a route's requests are looked at at all (else the request path does nothing)."""
    return route.audit is not None or route.target_agreement is not None


class Auditor:
    """One per process; ``running`` must be open (the app's lifespan) for audits to run."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        config: ConfigHolder,
        *,
        rng: random.Random | None = None,
        drain_s: float = DRAIN_S,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._config = config
        self._rng = rng or random.Random()
        self._drain_s = drain_s
        self._spend = SpendShares()
        self._in_flight = 0
        # Per route: max_in_flight is a route's setting, so one route's audits never crowd out
        # another's.
        self._route_in_flight: dict[str, int] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._census_written = anyio.Event()
        self._group: TaskGroup | None = None
        self._census: MemoryObjectSendStream[AuditRecord] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Auditor]:
        """Seed the spend sums from the ledger, run audits until exit, then drain for at most
        ``drain_s`` and cancel what is left."""
        self._spend = SpendShares(await self._ledger.route_spend())
        send, receive = anyio.create_memory_object_stream[AuditRecord](CENSUS_BUFFER_ROWS)
        self._census_written = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(self._write_census, receive)
            self._group, self._census = group, send
            try:
                yield self
            finally:
                self._group, self._census = None, None
                send.close()
                # The census rows still buffered share the audits' deadline: a slow ledger must
                # not hold shutdown past it.
                with anyio.move_on_after(self._drain_s, shield=True) as drain:
                    await self._idle.wait()
                    await self._census_written.wait()
                if drain.cancelled_caught:
                    log.warning(
                        "shutdown: %d audit(s) still running and the unwritten census cancelled",
                        self._in_flight,
                    )
                    group.cancel_scope.cancel()

    def after_serving(
        self,
        plan: CascadePlan,
        outcome: RequestOutcome,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int | None,
    ) -> None:
        """Look at a served, recorded request; never awaits, never raises for the audit."""
        route = plan.route
        if not audited(route):
            return
        self._spend.served(outcome.route, outcome.cost_usd)
        if outcome.status != "ok":
            return
        top = len(route.tiers) - 1
        if outcome.tier == top:
            self._queue_census(outcome, plan)
        elif outcome.decision != "last_tier" and route.audit is not None:
            # Only answers a tier's vote accepted (tier 0's "agreed" or a middle tier's
            # "escalated"): a request capped below the top (max_tier) answered by plurality, which
            # is no evidence about its pattern.
            self._draw(route.audit, _Sample(outcome, plan, messages, max_tokens))

    def _queue_census(self, outcome: RequestOutcome, plan: CascadePlan) -> None:
        if self._census is None:
            return
        for row in census_records(outcome, plan.spec):
            try:
                self._census.send_nowait(row)
            except anyio.WouldBlock:
                self._count(row.route, row.tier, "census", "dropped")

    def _draw(self, audit: AuditConfig, sample: _Sample) -> None:
        served = sample.served
        if audit.rate <= 0 or self._rng.random() >= audit.rate:
            return
        if self._group is None:
            return
        if self._spend.paused(served.route, audit.max_share_of_spend):
            self._count(served.route, served.tier, "sample", "paused")
            return
        running = self._route_in_flight.get(served.route, 0)
        if running >= audit.max_in_flight:
            self._count(served.route, served.tier, "sample", "dropped")
            return
        if self._in_flight == 0:
            self._idle = anyio.Event()
        self._in_flight += 1
        self._route_in_flight[served.route] = running + 1
        self._group.start_soon(self._audit, sample)

    async def _audit(self, sample: _Sample) -> None:
        try:
            with self._config.use() as config:
                await self._run(config, sample)
        except Exception:  # an audit must never take the process down; it is logged
            log.exception("audit of request %s failed", sample.served.request_id)
        finally:
            self._in_flight -= 1
            self._route_in_flight[sample.served.route] -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _run(self, config: Generation, sample: _Sample) -> None:
        served = sample.served
        route = config.settings.routes.get(served.route)
        if route is None or route.audit is None:
            return
        top = len(route.tiers) - 1
        audit_id = served.request_id + AUDIT_ID_SUFFIX
        tenant = served.tenant if route.audit.bill_to == "tenant" else ADMIN_TENANT
        try:
            # While the ledger is known to be out, no audit is paid for that it cannot record.
            self._ledger.ensure_available()
            reservation = await self._reserve(config, route, sample, tenant, audit_id)
        except QuotaExceeded:
            self._count(served.route, served.tier, "sample", "no_budget")
            return
        except LedgerUnavailable:
            self._count(served.route, served.tier, "sample", "unrecorded")
            return
        top_route = route.model_copy(update={"tiers": (route.tiers[top],)})
        plan = replace(sample.plan, route=top_route, max_tier=0, tags=())
        try:
            result = await config.engine.run(
                plan, sample.messages, request_id=audit_id, tenant=tenant,
                max_tokens=sample.max_tokens,
            )
        except BaseException:
            # Cancelled at shutdown (or a bug): nothing to bill, so the hold is given back.
            if reservation is not None:
                with anyio.CancelScope(shield=True):
                    await self._ledger.release(reservation)
            raise
        # Its calls went to the route's top tier: recorded as that tier's.
        for call in result.calls:
            call.tier = top
        result.tier = top
        result.purpose = "audit"
        result.parent_request_id = served.request_id
        result.config_version = config.version
        config.biller.bill(result, route)
        row = sample_record(served, result, sample.plan.spec)
        try:
            await self._ledger.record_audit([row], outcome=result, reservation=reservation)
        except LedgerUnavailable:
            # Spooled by the ledger with its reservation, written once the database is back (or
            # counted there, with its cost, if the spool is full): the audit's evidence waits.
            log.warning(
                "audit of request %s spooled (ledger unavailable): cost $%.10f",
                served.request_id, result.cost_usd,
            )
            self._count(served.route, served.tier, "sample", "unrecorded")
            return
        self._spend.audited(served.route, result.cost_usd)
        self._metrics.audit_cost.labels(served.route).inc(result.cost_usd)
        self._count(served.route, served.tier, "sample", row.outcome)

    async def _reserve(
        self,
        config: Generation,
        route: RouteConfig,
        sample: _Sample,
        tenant: str,
        audit_id: str,
    ) -> Reservation | None:
        """The tenant's budget pays: hold the audit's worst case, keeping the route's own worst-
        case request free after it. The operator pays: nothing to hold."""
        assert route.audit is not None
        if route.audit.bill_to != "tenant":
            return None
        chars = prompt_chars(sample.messages)
        max_tokens = sample.max_tokens or route.max_tokens
        worst = config.biller.worst_case((route.tiers[-1],), chars, max_tokens, route.deadline_s)
        request = config.biller.worst_case(route.tiers, chars, max_tokens, route.deadline_s)
        return await config.budgets.reserve(
            tenant, worst, request_id=audit_id, deadline_s=route.deadline_s, headroom_usd=request
        )

    async def _write_census(self, receive: MemoryObjectReceiveStream[AuditRecord]) -> None:
        """Commit census rows in batches, one transaction each, until the buffer closes."""
        async with receive:
            try:
                async for first in receive:
                    rows = [first]
                    while len(rows) < CENSUS_BATCH_ROWS:
                        try:
                            rows.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._record_census(rows)
            finally:
                self._census_written.set()

    async def _record_census(self, rows: list[AuditRecord]) -> None:
        try:
            await self._ledger.record_audit(rows)
        except Exception as exc:  # an outage, or rows refused: the writer must go on
            log.warning("%d census row(s) unrecorded: %s", len(rows), exc)
            for row in rows:
                self._count(row.route, row.tier, "census", "unrecorded")
            return
        for row in rows:
            self._count(row.route, row.tier, "census", row.outcome)

    def _count(self, route: str, tier: int, kind: str, outcome: str) -> None:
        self._metrics.audits.labels(route, str(tier), kind, outcome).inc()
