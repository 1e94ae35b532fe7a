"""Several processes (``coe serve --workers N``) open one new SQLite ledger file at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from gateway.ledger._sqlite import SqliteStore

PROCESSES = 4
FILES = 25


def _open(path: Path, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    store = SqliteStore(path)
    store.apply_migrations()
    store.close()


def test_processes_opening_a_new_ledger_file_together_all_start(tmp_path: Path) -> None:
    # Unretried, one switch to WAL in two found the other's under way ("database is locked").
    context = multiprocessing.get_context("fork")
    for index in range(FILES):
        start = context.Barrier(PROCESSES)
        path = tmp_path / f"ledger-{index}.db"
        processes = [
            context.Process(target=_open, args=(path, start)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0] * PROCESSES, path
