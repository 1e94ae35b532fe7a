"""The SQLite ledger: one file in WAL mode, committed with ``synchronous=FULL``.

WAL lets reports and budget checks read while the writer commits, also from another process
(``coe report`` beside ``coe serve``); FULL makes a commit survive a power cut, not only a crash.

Writers in several processes (``coe serve --workers N``) take turns through an exclusive
``flock`` on ``<ledger>-writer.lock`` before they begin, tried every 50 µs at first, then less
often, up to every millisecond. SQLite's own busy handler, left to guard against writers without
the turn, sleeps 1, 2, 5, 10 ms … between tries, while a request's answer waits for its commit:
two workers committing a few hundred times a second each collide often enough for its sleeps to
set the tail. The kernel releases the lock of a process that dies holding it.
"""

from __future__ import annotations

import fcntl
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
# How often a writer tries for its turn: from the first interval, doubling up to the last.
_TURN_RETRY_S = (0.00005, 0.001)


def sqlite_path(url: str) -> Path:
    """``sqlite:///coe.db`` is relative to the working directory, ``sqlite:////abs.db`` absolute."""
    path = url.removeprefix(SQLITE_PREFIX)
    if not path or path == ":memory:":
        raise ConfigError(f"ledger.url {url!r}: name a database file, e.g. sqlite:///coe.db")
    return Path(path)


def writer_turn_path(path: Path) -> Path:
    """The file whose flock is the turn of a process to write the ledger at ``path``."""
    return path.parent / f"{path.name}-writer.lock"


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
        # A file of its own: closing any descriptor of the database file would drop the POSIX
        # locks SQLite holds on it (sqlite.org/howtocorrupt.html, 2.2).
        self._writer_turn = writer_turn_path(path).open("ab")
        # One connection writes and one reads, each behind its own lock: worker threads take
        # turns on a connection, and the reader never waits for the writer's commit.
        self._writer = _connect(path)
        self._reader = _connect(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        connection = self._writer if write else self._reader
        with self._write_lock if write else self._read_lock, self._turn(write=write):
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

    @contextmanager
    def _turn(self, *, write: bool) -> Iterator[None]:
        """This process's turn to write, among every process writing the file; readers take
        none (WAL: they never wait for a writer)."""
        if not write:
            yield
            return
        _take_turn(self._writer_turn.fileno())
        try:
            yield
        finally:
            fcntl.flock(self._writer_turn, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()
            self._writer_turn.close()


def _take_turn(descriptor: int) -> None:
    """The exclusive flock on ``descriptor``, polled rather than waited for so that a holder that
    never lets go (a stopped process, a hung disk) fails the write as SQLite's busy timeout would:
    "database is locked", which the writer treats as an outage."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause, longest = _TURN_RETRY_S
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked") from None
            time.sleep(pause)
            pause = min(pause * 2, longest)


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
