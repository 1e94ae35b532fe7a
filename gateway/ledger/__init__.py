"""The ledger: one row per request and per upstream call, in SQLite or PostgreSQL.

``open_ledger(config)`` opens the database named by ``[ledger] url``, applies the schema's
migrations, releases budget reservations past their expiry (left by a process that stopped
before settling them), and runs the writer task for as long as the context is open.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from gateway.errors import LedgerUnavailable
from gateway.ledger._audits import AuditCounts, AuditOutcome, AuditRecord
from gateway.ledger._base import (
    GROUP_BYS,
    AuditSpend,
    Exits,
    GpuUsage,
    Group,
    GroupBy,
    Hold,
    Ledger,
    LedgerStats,
    LedgerSummary,
    Reservation,
    Reserved,
    Totals,
    Window,
    month_key,
)
from gateway.ledger._postgres import PostgresStore
from gateway.ledger._sqlite import SQLITE_PREFIX, SqliteStore, sqlite_path
from gateway.ledger._writer import BatchingLedger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gateway.config import LedgerConfig
    from gateway.ledger._sql import SqlStore

log = logging.getLogger("coe.ledger")

__all__ = [
    "AuditCounts",
    "AuditOutcome",
    "AuditRecord",
    "AuditSpend",
    "BatchingLedger",
    "Exits",
    "GROUP_BYS",
    "GpuUsage",
    "Group",
    "GroupBy",
    "Hold",
    "Ledger",
    "LedgerStats",
    "LedgerSummary",
    "LedgerUnavailable",
    "Reservation",
    "Reserved",
    "SQLITE_PREFIX",
    "Totals",
    "Window",
    "month_key",
    "open_ledger",
    "sqlite_path",
]


@asynccontextmanager
async def open_ledger(config: LedgerConfig) -> AsyncIterator[BatchingLedger]:
    """The ledger at ``config.url``, migrated; on exit what was queued is committed."""
    store = await anyio.to_thread.run_sync(_open_store, config.url)
    try:
        async with anyio.create_task_group() as tasks:
            ledger = BatchingLedger(store, batch_max_rows=config.batch_max_rows)
            tasks.start_soon(ledger.run)
            try:
                yield ledger
            finally:
                with anyio.CancelScope(shield=True):
                    await ledger.aclose()
    except BaseExceptionGroup as group:
        # The writer task does not raise, so a lone error is the caller's own: give it back
        # unwrapped, as it would surface without the task group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        await anyio.to_thread.run_sync(store.close)


def _open_store(url: str) -> SqlStore:
    store: SqlStore
    if url.startswith(SQLITE_PREFIX):
        store = SqliteStore(sqlite_path(url))
    else:
        store = PostgresStore(url)
    try:
        store.apply_migrations()
        released, amount = store.release_expired(datetime.now(UTC))
        if released:
            log.warning(
                "released %d expired budget reservation(s) of $%.6f left unsettled",
                released,
                amount,
            )
    except BaseException:
        store.close()
        raise
    return store
