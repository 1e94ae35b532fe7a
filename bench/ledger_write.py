"""What one request's ledger rows cost to commit, in process, when requests come back to back and
when they come 5 ms (200/s) or 20 ms (50/s) apart: the end-to-end runs' CPU per request rises as
the rate falls, and this says how much of that is the ledger's commit.

    .venv/bin/python -m bench.ledger_write [--writes 400] [--gaps-ms 0,5,20]

Each write is ``SqliteStore.write`` of one (b)-like request (one call) in one transaction, as the
ledger writer's thread runs it at 200/s (a batch of one), on a ledger file in a temporary folder
of the working directory's file system. Rows: the shipped commit (WAL, ``synchronous=FULL``: an
fsync per commit), the same without the fsync (``synchronous=NORMAL``), and the inserts alone,
rolled back (what SQLite's B-trees cost before any page is written). CPU is the writing thread's
(``time.thread_time``: user and system), wall is the call's; medians.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.ledger._sql import _INSERT_CALL, _INSERT_REQUEST
from gateway.ledger._sqlite import SqliteStore
from gateway.outcome import RequestOutcome
from gateway.stats import percentile
from providers.base import CallRecord

if TYPE_CHECKING:
    from collections.abc import Callable


def one_call_request() -> RequestOutcome:
    call = CallRecord(
        endpoint="u0", status="ok", text="positive", tokens_in=100, tokens_out=2,
        latency_ms=0.3, answer="positive", cost_usd=1.04e-5,
    )
    return RequestOutcome(
        request_id=uuid.uuid4().hex, route="plain", tenant="anonymous",
        created_at=datetime.now(UTC), threshold=2 / 3, policy="vote", answer="positive",
        agreement=1.0, votes={"positive": 1}, calls=[call], latency_ms=0.4, cost_usd=1.04e-5,
    )


def inserts_rolled_back(store: SqliteStore) -> Callable[[RequestOutcome], None]:
    def write(outcome: RequestOutcome) -> None:
        connection = store._writer
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(_INSERT_REQUEST.replace("%s", "?"), store._request_row(outcome))
        connection.executemany(_INSERT_CALL.replace("%s", "?"), store._call_rows(outcome))
        connection.execute("ROLLBACK")

    return write


def measure(write: Callable[[RequestOutcome], None], writes: int, gap_s: float) -> str:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(writes):
        outcome = one_call_request()
        began, began_cpu = time.perf_counter(), time.thread_time()
        write(outcome)
        cpu.append((time.thread_time() - began_cpu) * 1e6)
        wall.append((time.perf_counter() - began) * 1e6)
        time.sleep(gap_s)
    return f"{percentile(cpu, 50):.0f} | {percentile(wall, 50):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=400)
    parser.add_argument("--gaps-ms", default="0,5,20")
    args = parser.parse_args()
    gaps = [float(g) for g in args.gaps_ms.split(",")]
    print(f"$ python -m bench.ledger_write --writes {args.writes} --gaps-ms {args.gaps_ms}")
    print("| commit | ms between writes | CPU µs/write, median | wall µs/write, median |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:
        store = SqliteStore(Path(folder) / "coe.db")
        store.apply_migrations()
        ways: list[tuple[str, str, Callable[[RequestOutcome], None]]] = [
            ("FULL (shipped)", "FULL", lambda o: store.write([o])),
            ("NORMAL: no fsync", "NORMAL", lambda o: store.write([o])),
            ("the inserts alone, rolled back", "FULL", inserts_rolled_back(store)),
        ]
        for gap in gaps:
            for label, synchronous, write in ways:
                store._writer.execute(f"PRAGMA synchronous={synchronous}")
                print(f"| {label} | {gap:g} | {measure(write, args.writes, gap / 1000)} |")
        store.close()


if __name__ == "__main__":
    main()
