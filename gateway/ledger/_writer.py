"""The single writer task: requests queue their rows, one task commits them in batches.

``record`` enqueues and waits for its batch's commit, so a request's rows are durable before its
answer leaves, while concurrent requests share one transaction (and one fsync); the batch also
settles the requests' budget reservations. Database work runs in worker threads; the event loop
never blocks on it. A batch refused for its data is retried one request per transaction, so one
bad row fails only its own request. A request whose id is already in the ledger (clients choose
``x-request-id``, and may send one twice) is recorded under that id with a random suffix: its
calls were made and must be billed.

Outages. A write that fails because the database is out (connection lost, PostgreSQL down, a full
disk: ``_outage``) marks the ledger unavailable: the batch's requests get ``LedgerUnavailable``
(503) and are kept in a bounded in-memory spool, new requests are refused before any upstream call
(``ensure_available``), and the writer retries every ``retry_interval_s``: the spool first (its
rows carry status ``ledger_unavailable``), then a round trip. Once that commits the ledger is
available again, with no restart. The spool is memory only: the local disk may be what failed,
and a second store would be a second ledger to reconcile. What cannot be written (the spool is
full, the process stops with it not empty, the database refuses a row) is logged one line per
request with its tenant and cost, and counted in ``stats`` (``coe_ledger_unrecorded_*``).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import anyio
import psycopg

from gateway.errors import LedgerUnavailable
from gateway.ledger._base import Ledger, LedgerStats, Window, month_key

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from gateway.ledger._audits import AuditCounts, AuditRecord
    from gateway.ledger._base import GroupBy, Hold, LedgerSummary, Reservation
    from gateway.ledger._sql import SqlStore
    from gateway.outcome import RequestOutcome
    from policies.target import AuditRow

log = logging.getLogger("coe.ledger")

SPOOL_MAX_REQUESTS = 10_000
RETRY_INTERVAL_S = 0.5

_T = TypeVar("_T")


@dataclass(slots=True)
class _Pending:
    outcome: RequestOutcome
    reservation: Reservation | None = None
    # An audit's rows (gateway.audit), committed with its own request ``outcome``.
    audits: tuple[AuditRecord, ...] = ()
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return 1 + len(self.outcome.calls) + len(self.outcome.tags) + len(self.audits)


class BatchingLedger(Ledger):
    """A ``Ledger`` over one SQL store; ``run`` must be running in a task group."""

    def __init__(
        self,
        store: SqlStore,
        *,
        batch_max_rows: int,
        spool_max_requests: int = SPOOL_MAX_REQUESTS,
        retry_interval_s: float = RETRY_INTERVAL_S,
    ) -> None:
        self._store = store
        self._batch_max_rows = batch_max_rows
        self._spool_max = spool_max_requests
        self._retry_interval_s = retry_interval_s
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)
        self._stopped = anyio.Event()
        self._closing = False
        self._spool: deque[_Pending] = deque()
        self._next_retry = 0.0
        # The writer's wait for the next request; an outage found elsewhere (a reservation, an
        # audit) cuts it short, so the writer starts retrying without waiting for a request that
        # ensure_available would refuse.
        self._waiting: anyio.CancelScope | None = None
        self.stats = LedgerStats()

    @property
    def available(self) -> bool:
        return self.stats.available and not self._closing

    def ensure_available(self) -> None:
        """Raise ``LedgerUnavailable`` while the ledger cannot commit: a request refused here
        makes no upstream call."""
        if self._closing:
            raise LedgerUnavailable("the ledger is closed")
        if not self.stats.available:
            raise LedgerUnavailable(
                "the ledger cannot commit at the moment, so no request is started; retry shortly"
            )

    async def record(
        self, outcome: RequestOutcome, *, reservation: Reservation | None = None
    ) -> None:
        pending = _Pending(outcome, reservation)
        if not self.stats.available and not self._closing:
            # Not queued behind a database known to be out: spooled at once, the client told.
            self._hold([pending], "the ledger is unavailable")
            raise LedgerUnavailable(
                f"the ledger could not record request {outcome.request_id}; retry shortly"
            )
        try:
            # No await before the enqueue: requests arriving together land in one batch.
            self._send.send_nowait(pending)
        except anyio.ClosedResourceError:
            raise LedgerUnavailable("the ledger is closed") from None
        await pending.done.wait()
        if pending.error is not None:
            raise LedgerUnavailable(
                f"the ledger could not record request {outcome.request_id}; retry shortly"
            ) from pending.error

    async def reserve(
        self,
        tenant: str,
        amount_usd: float,
        budget_usd: float,
        *,
        request_id: str,
        expires_in_s: float,
        now: datetime | None = None,
    ) -> Hold:
        self.ensure_available()
        moment = now or datetime.now(UTC)

        def reserve() -> Hold:
            return self._store.reserve(
                tenant,
                amount_usd,
                budget_usd,
                request_id=request_id,
                reservation_id=uuid.uuid4().hex,
                now=moment,
                expires_in_s=expires_in_s,
            )

        return await self._database(reserve, f"reserve budget for request {request_id}")

    async def release(self, reservation: Reservation) -> None:
        await self._database(
            lambda: self._store.release([reservation.reservation_id]),
            f"release the reservation of request {reservation.request_id}",
        )

    async def release_expired(self, now: datetime | None = None) -> tuple[int, float]:
        """Release reservations past their expiry (left by a process that stopped)."""
        moment = now or datetime.now(UTC)
        return await self._database(
            lambda: self._store.release_expired(moment), "release expired reservations"
        )

    async def spent_this_month(self, tenant: str, *, now: datetime | None = None) -> float:
        month = month_key(now or datetime.now(UTC))
        return await self._database(lambda: self._store.spent(tenant, month), "read spend")

    async def reserved_this_month(self, tenant: str, *, now: datetime | None = None) -> float:
        month = month_key(now or datetime.now(UTC))
        return await self._database(lambda: self._store.reserved(tenant, month), "read spend")

    async def summarize(self, window: Window, group_by: GroupBy) -> LedgerSummary:
        return await self._database(lambda: self._store.summarize(window, group_by), "report")

    async def record_audit(
        self,
        audits: Sequence[AuditRecord],
        *,
        outcome: RequestOutcome | None = None,
        reservation: Reservation | None = None,
    ) -> None:
        """Commit audit rows (gateway.audit), with the audit's own request and calls (``outcome``,
        purpose ``audit``) and its settled reservation, in one transaction. Not batched with
        served requests: no client waits on it. An audit whose top-tier calls were made is
        spooled through an outage like a served request, so its cost reaches the ledger; census
        rows alone (no calls, no cost) are not."""
        if self._closing:
            raise LedgerUnavailable("the ledger is closed")
        pending = _Pending(outcome, reservation, tuple(audits)) if outcome is not None else None
        if not self.stats.available:
            if pending is not None:
                self._hold([pending], "the ledger is unavailable")
            raise LedgerUnavailable("the ledger could not record an audit; retry shortly")
        settle = [reservation] if reservation is not None else []
        outcomes = [outcome] if outcome is not None else []
        try:
            await self._database(
                lambda: self._store.write(outcomes, settle=settle, audits=audits),
                "record an audit",
            )
        except LedgerUnavailable:
            if pending is not None:
                self._hold([pending], "the ledger is unavailable")
            raise

    async def audit_counts(self, route: str, window: Window) -> AuditCounts:
        """Evidence, traffic per pattern and audit cost: what ``coe audit`` reports."""
        return await self._database(
            lambda: self._store.audit_counts(route, window), "read the audit report"
        )

    async def route_spend(self) -> dict[str, tuple[float, float]]:
        """Every route's (serving, audit) spend over the whole ledger."""
        return await self._database(self._store.route_spend, "read route spend")

    async def recent_audits(
        self, route: str, *, until: datetime, per_stratum: int
    ) -> list[AuditRow]:
        """The θ controller's evidence: the latest ``per_stratum`` audited rows of each (tier,
        size, kind, votes, θ in force) served before ``until``, oldest first."""
        return await self._database(
            lambda: self._store.recent_audits(route, until, per_stratum), "read audit rows"
        )

    async def readiness(self) -> tuple[bool, str]:
        """Whether the ledger commits now (for ``/readyz``), and why not."""
        if self._closing:
            return False, "the ledger is closed"
        if not self.stats.available:
            return False, f"the ledger cannot commit; {self.stats.spooled} request(s) spooled"
        try:
            await anyio.to_thread.run_sync(self._store.ping)
        except Exception as exc:  # any database error means not ready
            return False, f"the ledger cannot be reached ({type(exc).__name__})"
        return True, "ok"

    async def aclose(self) -> None:
        self._closing = True
        self._send.close()
        await self._stopped.wait()

    async def run(self) -> None:
        """Commit queued requests until ``aclose``; what was queued before it is committed."""
        try:
            async with self._receive:
                while (batch := await self._next_batch()) is not None:
                    if self._spool or not self.stats.available:
                        await self._retry_due()
                    if batch:
                        await self._commit(batch)
            if self._spool:
                await self._retry()
            self._drop_spool()
        finally:
            self._stopped.set()

    async def _database(self, work: Callable[[], _T], what: str) -> _T:
        """Database work off the event loop; an outage marks the ledger unavailable and becomes
        ``LedgerUnavailable``."""
        try:
            return await anyio.to_thread.run_sync(work)
        except Exception as exc:
            if not _outage(exc):
                raise
            self._unavailable(exc)
            raise LedgerUnavailable(f"the ledger could not {what}; retry shortly") from exc

    async def _next_batch(self) -> list[_Pending] | None:
        """The next batch; [] when a retry of the spool is due first; None once closed."""
        wait = math.inf
        if self._spool or not self.stats.available:
            wait = max(0.0, self._next_retry - time.monotonic())
        with anyio.move_on_after(wait) as self._waiting:
            try:
                first = await self._receive.receive()
            except anyio.EndOfStream:
                return None
            finally:
                self._waiting = None
            batch = [first]
            rows = first.rows
            while rows < self._batch_max_rows:
                try:
                    pending = self._receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                batch.append(pending)
                rows += pending.rows
            return batch
        return []

    async def _commit(self, batch: list[_Pending], *, renamed: bool = False) -> None:
        if not self.stats.available:
            self._hold(batch, "the ledger is unavailable")
            return
        # Shielded: once rows are handed to the database their waiters must learn the result.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._write, batch, False)
            except Exception as exc:  # any database error goes to the waiters, not the writer
                if _outage(exc):
                    self._unavailable(exc)
                    self._hold(batch, str(exc))
                    return
                if len(batch) == 1:
                    if _duplicate_key(exc) and not renamed:
                        outcome = batch[0].outcome
                        log.warning("request id %s is already in the ledger", outcome.request_id)
                        outcome.request_id = f"{outcome.request_id}.{uuid.uuid4().hex[:12]}"
                        await self._commit(batch, renamed=True)
                        return
                    self._fail(batch[0], exc)
                    return
                log.warning("ledger batch of %d failed (%s); retrying one by one", len(batch), exc)
                for pending in batch:
                    await self._commit([pending])
                return
        self.stats.commits += 1
        for pending in batch:
            self.stats.requests += 1
            self.stats.calls += len(pending.outcome.calls)
            pending.done.set()

    def _write(self, batch: list[_Pending], unanswered: bool) -> None:
        self._store.write(
            [p.outcome for p in batch],
            settle=[p.reservation for p in batch if p.reservation is not None],
            unanswered=unanswered,
            audits=[audit for p in batch for audit in p.audits],
        )

    async def _retry_due(self) -> None:
        if time.monotonic() >= self._next_retry:
            await self._retry()

    async def _retry(self) -> None:
        """Write the spool, oldest first, then check the database; available again on success."""
        self._next_retry = time.monotonic() + self._retry_interval_s
        with anyio.CancelScope(shield=True):
            try:
                while self._spool:
                    chunk = self._spool_chunk()
                    try:
                        await anyio.to_thread.run_sync(self._write, chunk, True)
                    except Exception as exc:
                        if _outage(exc):
                            raise
                        await self._retry_one_by_one(chunk)
                    else:
                        self.stats.spool_written += len(chunk)
                    for _ in chunk:
                        self._spool.popleft()
                    self.stats.spooled = len(self._spool)
                await anyio.to_thread.run_sync(self._store.ping)
            except Exception as exc:  # the writer outlives any error; it retries next interval
                log.log(
                    logging.DEBUG if _outage(exc) else logging.ERROR,
                    "ledger still unavailable: %s", exc,
                )
                self.stats.available = False
                return
        if not self.stats.available:
            log.warning(
                "ledger available again; %d spooled request(s) written so far",
                self.stats.spool_written,
            )
        self.stats.available = True

    def _spool_chunk(self) -> list[_Pending]:
        chunk: list[_Pending] = []
        rows = 0
        for pending in self._spool:
            if chunk and rows + pending.rows > self._batch_max_rows:
                break
            chunk.append(pending)
            rows += pending.rows
        return chunk

    async def _retry_one_by_one(self, chunk: list[_Pending]) -> None:
        for pending in chunk:
            try:
                await anyio.to_thread.run_sync(self._write, [pending], True)
            except Exception as exc:
                if _outage(exc):
                    raise
                if _duplicate_key(exc):
                    # Its first commit did land (the error came after COMMIT was sent).
                    log.warning(
                        "spooled request %s is in the ledger already", pending.outcome.request_id
                    )
                    continue
                self._unrecorded(pending, str(exc))
            else:
                self.stats.spool_written += 1

    def _unavailable(self, exc: BaseException) -> None:
        if self.stats.available:
            log.error("ledger unavailable (%s); refusing requests with 503 until it is back", exc)
        self.stats.available = False
        self._next_retry = time.monotonic() + self._retry_interval_s
        if self._waiting is not None:
            self._waiting.cancel()

    def _hold(self, batch: list[_Pending], reason: str) -> None:
        """Spool requests whose rows could not be committed, and tell their waiters."""
        error = LedgerUnavailable(reason)
        for pending in batch:
            self.stats.failed_requests += 1
            if len(self._spool) < self._spool_max:
                self._spool.append(pending)
            else:
                self._unrecorded(pending, "the ledger's spool is full")
            pending.error = error
            pending.done.set()
        self.stats.spooled = len(self._spool)

    def _drop_spool(self) -> None:
        while self._spool:
            self._unrecorded(self._spool.popleft(), "the gateway stopped with it spooled")
        self.stats.spooled = 0

    def _unrecorded(self, pending: _Pending, reason: str) -> None:
        outcome = pending.outcome
        self.stats.unrecorded_requests += 1
        self.stats.unrecorded_cost_usd += outcome.cost_usd
        log.error(
            "unrecorded request %s: tenant %s, route %s, %d call(s), cost $%.10f (%s)",
            outcome.request_id,
            outcome.tenant,
            outcome.route,
            len(outcome.calls),
            outcome.cost_usd,
            reason,
        )

    def _fail(self, pending: _Pending, exc: Exception) -> None:
        log.error("ledger could not record request %s: %s", pending.outcome.request_id, exc)
        self.stats.failed_requests += 1
        self._unrecorded(pending, "the database refused its rows")
        pending.error = exc
        pending.done.set()


def _outage(exc: BaseException) -> bool:
    """Whether a database error says the database is out (unreachable, shut down, full disk, a
    lock never granted) rather than refusing this data: retrying the same rows later may work."""
    # psycopg_pool.PoolTimeout is an OperationalError too.
    return isinstance(exc, psycopg.OperationalError | sqlite3.OperationalError)


def _duplicate_key(exc: Exception) -> bool:
    """Whether a write failed on a primary key already taken: only a request's id can be."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc)
    return isinstance(exc, psycopg.errors.UniqueViolation)
