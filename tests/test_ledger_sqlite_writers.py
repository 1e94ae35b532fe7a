"""Writers in several processes (``coe serve --workers N``) take turns on one SQLite ledger."""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ledger import _sqlite
from gateway.ledger._sqlite import SqliteStore, writer_turn_path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "coe.db")
    opened.apply_migrations()
    yield opened
    opened.close()


@pytest.fixture
def other_process_turn(tmp_path: Path) -> Iterator[int]:
    """A descriptor of the turn file of its own, as another process would hold it."""
    with writer_turn_path(tmp_path / "coe.db").open("ab") as turn:
        yield turn.fileno()


def _free(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    return True


def test_a_write_transaction_holds_the_turn_until_it_ends(
    store: SqliteStore, other_process_turn: int
) -> None:
    with store.transaction(write=True) as session:
        session.execute("SELECT 1")
        assert not _free(other_process_turn)
    assert _free(other_process_turn)


def test_a_failed_write_transaction_gives_the_turn_back(
    store: SqliteStore, other_process_turn: int
) -> None:
    with pytest.raises(sqlite3.OperationalError), store.transaction(write=True) as session:
        session.execute("SELECT * FROM no_such_table")
    assert _free(other_process_turn)


def test_a_read_takes_no_turn(store: SqliteStore, other_process_turn: int) -> None:
    fcntl.flock(other_process_turn, fcntl.LOCK_EX)
    assert store.spent("acme", "2026-11") == 0.0


def test_a_turn_never_given_fails_as_a_locked_database(
    store: SqliteStore, other_process_turn: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As SQLite's busy timeout would: the writer counts "database is locked" as an outage (503).
    monkeypatch.setattr(_sqlite, "_BUSY_TIMEOUT_S", 0.01)
    fcntl.flock(other_process_turn, fcntl.LOCK_EX)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        store.write([])
    fcntl.flock(other_process_turn, fcntl.LOCK_UN)
    store.write([])
