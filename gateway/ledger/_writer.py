"""The single writer task: requests queue their rows, one task commits them in batches.

``record`` enqueues and waits for its batch's commit, so a request's rows are durable before its
answer leaves, while concurrent requests share one transaction (and one fsync). Database work runs
in worker threads; the event loop never blocks on it. A failed batch is retried one request per
transaction, so one bad row fails only its own request. A request whose id is already in the
ledger (clients choose ``x-request-id``, and may send one twice) is recorded under that id with a
random suffix: its calls were made and must be billed.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import psycopg

from gateway.ledger._base import Ledger, LedgerStats, LedgerUnavailable, month_key

if TYPE_CHECKING:
    from gateway.ledger._base import GroupBy, LedgerSummary, Window
    from gateway.ledger._sql import SqlStore
    from gateway.outcome import RequestOutcome

log = logging.getLogger("coe.ledger")


@dataclass(slots=True)
class _Pending:
    outcome: RequestOutcome
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return 1 + len(self.outcome.calls) + len(self.outcome.tags)


class BatchingLedger(Ledger):
    """A ``Ledger`` over one SQL store; ``run`` must be running in a task group."""

    def __init__(self, store: SqlStore, *, batch_max_rows: int) -> None:
        self._store = store
        self._batch_max_rows = batch_max_rows
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)
        self._stopped = anyio.Event()
        self.stats = LedgerStats()

    async def record(self, outcome: RequestOutcome) -> None:
        pending = _Pending(outcome)
        try:
            # No await before the enqueue: requests arriving together land in one batch.
            self._send.send_nowait(pending)
        except anyio.ClosedResourceError:
            raise LedgerUnavailable("the ledger is closed") from None
        await pending.done.wait()
        if pending.error is not None:
            raise LedgerUnavailable(
                f"the ledger could not record request {outcome.request_id}"
            ) from pending.error

    async def spent_this_month(self, tenant: str, *, now: datetime | None = None) -> float:
        month = month_key(now or datetime.now(UTC))
        return await anyio.to_thread.run_sync(self._store.spent, tenant, month)

    async def summarize(self, window: Window, group_by: GroupBy) -> LedgerSummary:
        return await anyio.to_thread.run_sync(self._store.summarize, window, group_by)

    async def aclose(self) -> None:
        self._send.close()
        await self._stopped.wait()

    async def run(self) -> None:
        """Commit queued requests until ``aclose``; what was queued before it is committed."""
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    rows = first.rows
                    while rows < self._batch_max_rows:
                        try:
                            pending = self._receive.receive_nowait()
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                        batch.append(pending)
                        rows += pending.rows
                    await self._commit(batch)
        finally:
            self._stopped.set()

    async def _commit(self, batch: list[_Pending], *, renamed: bool = False) -> None:
        # Shielded: once rows are handed to the database their waiters must learn the result.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._store.write, [p.outcome for p in batch])
            except Exception as exc:  # any database error goes to the waiters, not the writer
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

    def _fail(self, pending: _Pending, exc: Exception) -> None:
        log.error("ledger could not record request %s: %s", pending.outcome.request_id, exc)
        self.stats.failed_requests += 1
        pending.error = exc
        pending.done.set()


def _duplicate_key(exc: Exception) -> bool:
    """Whether a write failed on a primary key already taken: only a request's id can be."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc)
    return isinstance(exc, psycopg.errors.UniqueViolation)
