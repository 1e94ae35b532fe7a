"""Issue 13's second acceptance test: does any response wait for an audit?

Two ``coe serve`` processes run side by side on the same scripted upstreams (bench/audit_setup.py;
tier 0 answers in ``--tier0-ms``, the top tier in ``--top-ms``, ten times slower by default, so an
audit that held a response back would add its whole top-tier call to that response): one audits
``--rate`` of the requests that exit below the top tier (1.0: every one), the other has no
audit. The same open-loop load (bench/loadgen.py, its own process: ``--load`` requests a second
for ``--phase-s`` seconds, 5 % of them answered wrong by tier 0 so that audits also disagree) goes
to one gateway per phase, alternating on, off, on, off, … for ``--rounds`` rounds, so both see
the same machine noise. After each phase the script waits until that phase's audits are in the
ledger, so no phase carries the previous one's audits.

It prints each phase's latency percentiles, the gateway's CPU use and the audits it completed,
then per percentile (p50, p99) the ratio of the on phases' mean to the off phases' mean beside
the spread of each condition alone (the largest phase over the smallest: on/on, off/off). "Within
noise" means the on/off ratio lies inside the widest of those spreads.

    .venv/bin/python -m bench.audit_latency        # the figures in bench/AUDIT.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.audit_setup import (
    ROUTE,
    Upstreams,
    audit_counters,
    chat_body,
    gateway_config,
    upstreams,
)
from tests.gateway_process import GatewayProcess

SETTLE_TIMEOUT_S = 60.0
# Unrecorded requests at the start of every phase (5 s at 50/s): new connections, warm caches.
WARMUP_REQUESTS = 250
QUANTILES = ("p50", "p90", "p99", "max")


@dataclass(frozen=True, slots=True)
class Phase:
    audit: bool
    load: dict[str, Any]  # bench/loadgen.py's JSON
    cpu_s: float  # the gateway's CPU time during the phase
    audits: int  # audits that finished during the phase and its settling

    def ms(self, quantile: str) -> float:
        return float(self.load["latency_ms"][quantile])


def cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def finished_audits(url: str) -> int:
    return audit_counters(httpx.get(f"{url}/metrics", timeout=30).text, ROUTE).finished


def wait_for_audits(url: str, before: int, expected: int | None) -> int:
    """Wait until the finished audits stop changing for a second (and, when ``expected`` is
    known, reach ``before + expected``); return how many finished since ``before``."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    done, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = finished_audits(url) - before
        if now != done:
            done, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0 and (expected is None or done >= expected):
            break
        time.sleep(0.2)
    return done


def run_phase(args: argparse.Namespace, gateway: GatewayProcess, audit: bool) -> Phase:
    body = orjson.dumps(chat_body(0, 0, wrong=False)).decode()
    command = [
        sys.executable, "-m", "bench.loadgen", "--url", f"{gateway.url}/v1/chat/completions",
        "--rate", f"{args.load:g}", "--requests", str(int(args.load * args.phase_s)),
        "--warmup", str(WARMUP_REQUESTS), "--body", body, "--split-every", "20",
    ]
    before = finished_audits(gateway.url) if audit else 0
    cpu0 = cpu_s(gateway.pid)
    done = subprocess.run(command, capture_output=True, check=True, text=True)
    cpu = cpu_s(gateway.pid) - cpu0
    load: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    audits = 0
    if audit:
        # At rate 1 every answer is audited; below it the count is random.
        answered = WARMUP_REQUESTS + int(load["ok"])
        audits = wait_for_audits(gateway.url, before, answered if args.rate == 1 else None)
    return Phase(audit, load, cpu, audits)


def phase_line(index: int, phase: Phase, phase_s: float) -> str:
    load = phase.load
    figures = "  ".join(f"{phase.ms(q):>7.1f}" for q in QUANTILES)
    return (
        f"{index:>5} {'on' if phase.audit else 'off':<5} {load['ok']:>5} "
        f"{sum(v for k, v in load['statuses'].items() if k != '200') + load['failures']:>6}  "
        f"{figures}  {load['max_send_lag_ms']:>7.1f}  {phase.cpu_s / phase_s * 100:>5.0f}%  "
        f"{phase.audits:>6}"
    )


def comparison(phases: list[Phase], quantile: str) -> tuple[str, bool]:
    """The on/off ratio of the phases' means at ``quantile`` beside each condition's spread."""
    on = [p.ms(quantile) for p in phases if p.audit]
    off = [p.ms(quantile) for p in phases if not p.audit]
    ratio = statistics.fmean(on) / statistics.fmean(off)
    spread_on, spread_off = max(on) / min(on), max(off) / min(off)
    noise = max(spread_on, spread_off)
    within = 1 / noise <= ratio <= noise
    text = (
        f"{quantile}: on {', '.join(f'{v:.1f}' for v in on)} ms; "
        f"off {', '.join(f'{v:.1f}' for v in off)} ms; "
        f"on/off (means) {ratio:.3f}; spread on/on {spread_on:.3f}, off/off {spread_off:.3f}; "
        f"{'within' if within else 'OUTSIDE'} noise"
    )
    return text, within


def run(args: argparse.Namespace, ports: Upstreams, folder: Path) -> int:
    audit = {
        "rate": args.rate,
        "max_in_flight": 1000,
        "max_share_of_spend": 1000.0,  # the spend cap is not under test: it never binds here
        "bill_to": "operator",
    }
    gateways = {
        True: GatewayProcess(gateway_config(ports, folder / "on", audit), folder / "on", name="on"),
        False: GatewayProcess(gateway_config(ports, folder / "off", None), folder / "off",
                              name="off"),
    }
    load_before = os.getloadavg()
    phases: list[Phase] = []
    try:
        for gateway in gateways.values():
            gateway.start()
        sys.stdout.write(
            "phase audit    ok errors      p50      p90      p99      max  sendlag  gwCPU "
            " audits\n"
        )
        for index in range(2 * args.rounds):
            phases.append(run_phase(args, gateways[index % 2 == 0], index % 2 == 0))
            sys.stdout.write(phase_line(index + 1, phases[-1], args.phase_s) + "\n")
            sys.stdout.flush()
    finally:
        for gateway in gateways.values():
            gateway.stop()
    load_after = os.getloadavg()
    verdicts = []
    for quantile in ("p50", "p99"):
        text, within = comparison(phases, quantile)
        verdicts.append(within)
        sys.stdout.write(text + "\n")
    errors = sum(p.load["ok"] != p.load["sent"] for p in phases)
    on = [p for p in phases if p.audit]
    expected = sum(round((WARMUP_REQUESTS + p.load["ok"]) * args.rate) for p in on)
    audits = sum(p.audits for p in on)
    missing = expected - audits if args.rate == 1 else 0
    sys.stdout.write(
        f"phases with a failed request: {errors}; audits finished {audits} "
        f"(expected {'' if args.rate == 1 else 'about '}{expected}) (latencies in ms, from send "
        f"to last byte, percentiles by "
        f"gateway.stats.percentile); load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}; {os.cpu_count()} CPUs\n"
    )
    return 0 if all(verdicts) and errors == 0 and missing == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--load", type=float, default=50.0, help="requests a second")
    parser.add_argument("--phase-s", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=3, help="on + off phase pairs")
    parser.add_argument("--rate", type=float, default=1.0, help="[routes.NAME.audit] rate")
    parser.add_argument("--tier0-ms", type=float, default=5.0)
    parser.add_argument("--top-ms", type=float, default=50.0)
    args = parser.parse_args()
    sys.stdout.write(
        f"audit latency: two coe serve processes (audit rate {args.rate:g} / no audit), same "
        f"upstreams: tier 0 = 3 endpoints at {args.tier0_ms:g} ms, top tier {args.top_ms:g} ms; "
        f"θ = 1, 5 % of prompts wrong at tier 0; open loop {args.load:g}/s for {args.phase_s:g} s "
        f"per phase (+{WARMUP_REQUESTS} warm-up requests), on and off alternating, "
        f"{args.rounds} rounds\n"
    )
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for sub in ("on", "off"):
            (folder / sub).mkdir()
        with upstreams(args.tier0_ms, args.top_ms, folder) as ports:
            return run(args, ports, folder)


if __name__ == "__main__":
    sys.exit(main())
