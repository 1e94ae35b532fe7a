"""The SQLite ledger: one file in WAL mode, committed with ``synchronous=FULL``.

WAL lets reports and budget checks read while the writer commits, also from another process
(``coe report`` beside ``coe serve``); FULL makes a commit survive a power cut, not only a crash.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.ledger._schema import SQLITE
from gateway.ledger._sql import SqlStore

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from gateway.ledger._schema import Session

SQLITE_PREFIX = "sqlite:///"
# How long a connection waits for another's lock (SQLite's busy handler), and the switch to WAL.
_BUSY_TIMEOUT_S = 30.0
_WAL_RETRY_S = 0.01


def sqlite_path(url: str) -> Path:
    """``sqlite:///coe.db`` is relative to the working directory, ``sqlite:////abs.db`` absolute."""
    path = url.removeprefix(SQLITE_PREFIX)
    if not path or path == ":memory:":
        raise ConfigError(f"ledger.url {url!r}: name a database file, e.g. sqlite:///coe.db")
    return Path(path)


class _SqliteSession:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        return self._connection.execute(sql.replace("%s", "?"), params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._connection.executemany(sql.replace("%s", "?"), rows)


class SqliteStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise ConfigError(f"ledger.url: the folder {str(path.parent)!r} does not exist")
        # One connection writes and one reads, each behind its own lock: worker threads take
        # turns on a connection, and the reader never waits for the writer's commit.
        self._writer = _connect(path)
        self._reader = _connect(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        connection = self._writer if write else self._reader
        with self._write_lock if write else self._read_lock:
            # IMMEDIATE takes the write lock up front, so a busy file waits (busy_timeout)
            # instead of failing halfway through a batch.
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteSession(connection)
                connection.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (a full disk): the connection must not stay in
                # the transaction, or every later BEGIN would fail. SQLite may have rolled back
                # already (I/O errors), so the rollback is only attempted while one is open.
                if connection.in_transaction:
                    with suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and ended explicitly above.
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_S
    )
    _switch_to_wal(connection)
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, retried while busy: when two processes (``--workers``) open a
    new ledger file at once, one's switch finds the other's under way and SQLite answers "database
    is locked" at once, without its busy handler. Runs in a worker thread, at start."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(_WAL_RETRY_S)
