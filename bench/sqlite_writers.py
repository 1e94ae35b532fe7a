"""Two processes committing to one SQLite ledger file: commit latency with the writers' turn
(gateway.ledger._sqlite, the default) and with SQLite's busy handler alone, side by side.

    .venv/bin/python -m bench.sqlite_writers [--commits 800] [--pause-ms 0.5] [--rounds 3]

Each process commits ``--commits`` one-row transactions through ``SqliteStore`` (WAL,
``synchronous=FULL``), pausing ``--pause-ms`` between them, as two ``coe serve`` workers' ledger
writers would under load. Rounds alternate the two ways; the latency of a commit runs from asking
for the transaction to the end of COMMIT.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.ledger import _sqlite
from gateway.ledger._sqlite import SqliteStore
from gateway.stats import percentile

if TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

PROCESSES = 2


@contextmanager
def _no_turn(_store: SqliteStore, *, write: bool) -> Iterator[None]:  # noqa: ARG001 - _turn's
    yield


def _writer(path: Path, turn: bool, commits: int, pause_s: float, start: Barrier,
            out: Queue[list[float]]) -> None:
    if not turn:
        SqliteStore._turn = _no_turn  # type: ignore[method-assign]
    store = SqliteStore(path)
    latencies = []
    start.wait()
    for index in range(commits):
        began = time.perf_counter()
        with store.transaction(write=True) as session:
            session.execute("INSERT INTO bench_rows VALUES (%s, %s)", (index, "x" * 200))
        latencies.append((time.perf_counter() - began) * 1000)
        time.sleep(pause_s)
    store.close()
    out.put(latencies)


def measure(folder: Path, turn: bool, commits: int, pause_s: float) -> list[float]:
    path = folder / f"ledger-{time.monotonic_ns()}.db"
    store = SqliteStore(path)
    with store.transaction(write=True) as session:
        session.execute("CREATE TABLE bench_rows (n INTEGER, payload TEXT)")
    store.close()
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=_writer, args=(path, turn, commits, pause_s, start, out))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    latencies = [ms for _ in processes for ms in out.get()]
    for process in processes:
        process.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=800, help="per process and round")
    parser.add_argument("--pause-ms", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{PROCESSES} processes x {args.commits} commits, {args.pause_ms} ms apart; "
          f"SQLite {_sqlite.sqlite3.sqlite_version}; latency of one commit, ms")
    print("round | way | p50 | p90 | p99 | max")
    with tempfile.TemporaryDirectory(prefix="coe-sqlite-writers-") as folder:
        for round_ in range(1, args.rounds + 1):
            for turn in (True, False):
                ms = measure(Path(folder), turn, args.commits, args.pause_ms / 1000)
                way = "writers' turn" if turn else "busy handler"
                print(f"{round_} | {way} | " + " | ".join(
                    f"{percentile(ms, q):.2f}" for q in (50, 90, 99)) + f" | {max(ms):.2f}",
                    flush=True)


if __name__ == "__main__":
    main()
