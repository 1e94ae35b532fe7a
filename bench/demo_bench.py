"""Time ``coe demo`` as a user runs it (after the install) and keep its raw output.

    python bench/demo_bench.py                    # .venv/bin/coe demo --out-dir coe-out/bench
    python bench/demo_bench.py --coe /path/to/coe -- --limit 100

Writes ``bench/results/demo-time.txt`` (the wall time, the machine, its load before and after: the
demo's budget is 90 s on a 2-core machine) and ``bench/results/demo-output.txt`` (what the demo
printed). The time covers the whole command: the interpreter starting, reading the bundled
recording, the search, the model server and gateway, both live passes, the replay check and the
plot.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUDGET_S = 90.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coe", default=str(ROOT / ".venv" / "bin" / "coe"),
                        help="the coe executable (default .venv/bin/coe)")
    parser.add_argument("--out-dir", default=str(ROOT / "coe-out" / "bench"))
    parser.add_argument("extra", nargs="*", help="more arguments for coe demo (after --)")
    args = parser.parse_args()
    command = [args.coe, "demo", "--out-dir", args.out_dir, *args.extra]
    load_before = os.getloadavg()
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "120"}, check=False)
    wall = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    load_after = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo-output.txt").write_text(done.stdout + done.stderr, encoding="utf-8")
    lines = [
        f"coe demo wall time: {wall:.1f} s (budget {BUDGET_S:.0f} s: "
        f"{'within' if wall <= BUDGET_S else 'OVER'}); exit status {done.returncode}",
        f"CPU time of the demo process: {cpu:.1f} s (user {usage.ru_utime:.1f} + system "
        f"{usage.ru_stime:.1f}); on a machine shared with other work, wall time stretches and "
        "CPU time does not",
        f"command: {' '.join(command)}",
        f"when: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {'/'.join(f'{x:.2f}' for x in load_after)}",
        "output: bench/results/demo-output.txt",
    ]
    (RESULTS / "demo-time.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
