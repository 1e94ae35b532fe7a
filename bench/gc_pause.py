"""How long one of Python's full garbage collections stops a started gateway, with and without
the heap frozen after start (``gateway.serve.ProcessServer``).

    .venv/bin/python -m bench.gc_pause [--collections 9]

Builds the app from bench/run.py's config (eleven endpoints, five routes, a SQLite ledger in a
temporary folder) and runs its lifespan, as ``coe serve`` does before it serves; then times
``gc.collect()`` (a full collection, the kind Python starts on its own under load) ``--collections``
times as started, then again after ``gc.freeze()``. Every request in flight waits for a full
collection: it runs on the event loop's thread, holding the GIL.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import anyio

from bench.run import gateway_config
from gateway.api import create_app
from gateway.config import load_settings
from gateway.stats import percentile


def collections_ms(count: int) -> list[float]:
    durations = []
    for _ in range(count):
        began = time.perf_counter()
        gc.collect()
        durations.append((time.perf_counter() - began) * 1000)
    return durations


def row(label: str, durations: list[float]) -> str:
    return (
        f"| {label} | {len(gc.get_objects())} | {gc.get_freeze_count()} | "
        f"{percentile(durations, 50):.2f} | "
        f"{min(durations):.2f} | {max(durations):.2f} |"
    )


async def measure(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "coe.toml"
        config.write_text(gateway_config(8400, Path(folder)))
        app = create_app(load_settings(config))
        async with app.router.lifespan_context(app):
            print("| heap | objects collected over | objects frozen | full collection ms, median "
                  "| min | max |")
            print("|---|---|---|---|---|---|")
            print(row("started, not frozen", collections_ms(count)))
            gc.freeze()
            print(row("frozen after start (coe serve)", collections_ms(count)))
            gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=int, default=9)
    args = parser.parse_args()
    print(f"$ python -m bench.gc_pause --collections {args.collections}")
    anyio.run(measure, args.collections)


if __name__ == "__main__":
    main()
