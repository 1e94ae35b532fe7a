"""Time ``coe eval search`` on the GSM8K recording and check its acceptance figures.

    .venv/bin/python -m bench.search_bench > bench/results/search-gsm8k.txt

On the bundled recording (gateway/demo_data/gsm8k-zeroeval.jsonl.gz: 1,319 GSM8K questions, 12
LLMs): every tier-0 ensemble of 1–3 of the six cheap models × every single top model × θ ∈ {1/2,
2/3, 1} × early quorum / wait-for-all, plus the 12 single models. It prints the machine, the time of
each stage and in all (reading the recording included), the best single model, the cheapest route
at least as accurate and its share of that model's cost, and whether ``coe check-config``
accepts the route's TOML. Acceptance: ≤ 30 s in all, a route at ≤ 45 % of the best single
model's cost.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.evaluation.search import SearchSpace, run_search
from gateway.evaluation.search_output import search_toml
from providers.recording import read_recording

RECORDING = Path(__file__).resolve().parents[1] / "gateway/demo_data/gsm8k-zeroeval.jsonl.gz"


def main() -> int:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    started = time.perf_counter()
    recording = read_recording(RECORDING)
    read = time.perf_counter() - started
    report = run_search(recording, SearchSpace(max_tier0_size=3, thresholds=(0.5, 2 / 3, 1.0)))
    total = time.perf_counter() - started
    best, chosen = report.best_single, report.recommended
    share = chosen.cost_per_request_usd / best.cost_per_request_usd
    print(f"recording: {RECORDING.name}, {report.examples} examples x "
          f"{len(recording.header.endpoints)} endpoints")
    print(f"configurations: {report.configs} (12 single models + 41 tier-0 ensembles x 6 top "
          "models x 3 thresholds x 2 protocols)")
    print(f"time: read {read:.2f} s, search {report.seconds:.2f} s "
          f"(precompute + evaluate + frontier), total {total:.2f} s")
    print(f"best single model: {best.config.name}, accuracy {best.accuracy:.4f}, "
          f"${best.cost_per_request_usd:.6g}/request (estimated)")
    print(f"recommended: {chosen.config.name}, accuracy {chosen.accuracy:.4f}, "
          f"${chosen.cost_per_request_usd:.6g}/request = {share:.1%} of the best single model's "
          f"cost; exits {chosen.exit_fractions}; p50 {chosen.latency_p50_ms:.0f} ms, "
          f"p95 {chosen.latency_p95_ms:.0f} ms")
    frontier = sum(row.pareto for row in report.rows)
    print(f"Pareto rows: {frontier}")
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "route.toml"
        config.write_text(search_toml(report, recording.header, str(RECORDING)) + "\n")
        check = subprocess.run(
            [sys.executable, "-c", "from gateway.cli import main; main()", "check-config",
             str(config)],
            capture_output=True, text=True, check=False,
        )
    last = check.stdout.strip().splitlines()[-1:] or check.stderr.strip().splitlines()[-1:]
    print(f"coe check-config on the route's TOML: exit {check.returncode}: {' '.join(last)}")
    ok = total <= 30 and chosen.accuracy >= best.accuracy and share <= 0.45
    print(f"acceptance (<= 30 s, as accurate, <= 45 % of the cost, config valid): "
          f"{'PASS' if ok and check.returncode == 0 else 'FAIL'}")
    return 0 if ok and check.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
