"""The PostgreSQL ledger, shared by every gateway process pointed at it.

A small psycopg connection pool serves the writer and the readers; reports read in one
REPEATABLE READ snapshot so their sums agree with each other.

When the database goes away the pool reconnects by itself: each connection is checked as it is
handed out (a closed one is replaced, not used), a wait for a connection gives up after
``POOL_TIMEOUT_S`` (the request then gets 503), and a reconnection attempt gives up after
``RECONNECT_TIMEOUT_S``, so the next use starts a fresh one at once instead of waiting out the
pool's exponential back-off (1, 2, 4, 8 … s): service resumes within seconds of the database.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.errors import LedgerUnavailable
from gateway.ledger._schema import POSTGRES
from gateway.ledger._sql import SqlStore

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import psycopg

    from gateway.ledger._schema import Session

POOL_MAX_SIZE = 8
CONNECT_TIMEOUT_S = 10.0
POOL_TIMEOUT_S = 2.0
RECONNECT_TIMEOUT_S = 2.0


class _PostgresSession:
    def __init__(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        cursor = self._connection.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(sql, rows)


class PostgresStore(SqlStore):
    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        self._pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            open=False,
            name="coe-ledger",
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            check=ConnectionPool.check_connection,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            self._pool.close()
            # The URL is not repeated: it may hold a password.
            raise LedgerUnavailable(
                f"could not connect to the PostgreSQL ledger within {CONNECT_TIMEOUT_S:g} s"
            ) from None

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        with self._pool.connection() as connection, connection.transaction():
            if not write:
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield _PostgresSession(connection)

    def close(self) -> None:
        self._pool.close()
