"""Issue 13's first acceptance test: does the audit's 3/3 interval contain the true agreement?

Scripted upstreams (bench/audit_setup.py): tier 0 (three endpoints) answers a share ``p`` of the
prompts unanimously wrong, chosen per prompt by a seeded hash, and every other prompt unanimously
right; the top tier (one endpoint) is always right. So the true agreement of tier 0's 3/3 pattern
with the top tier is ``1 − p``, per request, independently of everything the gateway does.

Per seed, a fresh ``coe serve`` (its own process, SQLite ledger in a temporary folder, the audit at
``--rate``, ``max_in_flight`` high enough that none is dropped and a spend cap that never binds)
serves ``--requests`` prompts, ``--concurrency`` at a time. Every answer is checked to be the one
tier 0 was scripted to give (an audit never changes a response) and to have exited at tier 0
(``changed`` counts those that were not; ``lost``, requests whose connection failed). Once
every sampled audit has finished (the report's audited count equals the audits the gateway
counted as finished in ``coe_audits_total``, and stays so for a second), ``GET /v1/coe/audit`` is
read and its 3/3 sample row checked: does its ci95 contain ``1 − p``? The seed changes which
prompts are wrong; the gateway's sampling draws from its own unseeded RNG (gateway/audit), so it
differs on every run too, and is independent of which prompts are wrong.

    .venv/bin/python -m bench.audit_coverage       # the figures in bench/AUDIT.md

Prints one line per seed and ``holds in K of N (target >= 18 of 20)``; exits 1 if it does not
hold often enough or any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.audit_setup import (
    RIGHT,
    ROUTE,
    WRONG,
    AuditCounters,
    Upstreams,
    audit_counters,
    audit_report,
    chat_body,
    gateway_config,
    is_wrong,
    pattern_row,
    upstreams,
)
from tests.gateway_process import GatewayProcess

SETTLE_TIMEOUT_S = 120.0
SETTLE_POLL_S = 0.2
# The report must show the same audited count for this long after it equals the audits started.
SETTLE_QUIET_S = 1.0


@dataclass(slots=True)
class Served:
    """What the client saw of one seed's requests."""

    as_scripted: int = 0  # 200s with the answer tier 0 was scripted to give, at tier 0
    changed: int = 0  # any other answer, tier or HTTP status
    lost: int = 0  # no answer: the connection failed (a transport error)
    problems: list[str] = field(default_factory=list)  # the first few, for stderr


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    wrong: int  # prompts scripted wrong, of all requests
    served: Served
    row: dict[str, Any]
    counters: AuditCounters
    contains: bool


async def serve_all(url: str, seed: int, requests: int, share: float, concurrency: int) -> Served:
    """Send every prompt, ``concurrency`` at a time, and check every answer."""
    # Idle connections expire on the client's side well before the gateway's keep-alive (5 s),
    # so a request never goes out on a connection the gateway is closing.
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0
    )
    gate = asyncio.Semaphore(concurrency)
    served = Served()

    async def one(client: httpx.AsyncClient, index: int) -> None:
        wrong = is_wrong(seed, index, share)
        async with gate:
            try:
                response = await client.post(
                    "/v1/chat/completions", json=chat_body(seed, index, wrong)
                )
            except httpx.TransportError as exc:
                served.lost += 1
                served.problems.append(f"request {index}: {exc!r}")
                return
        if response.status_code != 200:
            served.changed += 1
            served.problems.append(
                f"request {index}: HTTP {response.status_code} {response.text[:200]}"
            )
            return
        body = response.json()
        answer = body["choices"][0]["message"]["content"]
        exit_tier = body["coe"]["tier"]
        if answer == (WRONG if wrong else RIGHT) and exit_tier == 0:
            served.as_scripted += 1
        else:
            served.changed += 1
            served.problems.append(f"request {index}: answer {answer!r} at tier {exit_tier}")

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(one(client, index) for index in range(requests)))
    return served


def settle(url: str) -> tuple[dict[str, Any], AuditCounters]:
    """Wait until the audits are done: the report's audited count equals the finished audits in
    the metrics (each counted once its ledger row is in) and stays so for ``SETTLE_QUIET_S``, far
    longer than an audit of the instant top tier takes. Return the report and the counters."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    quiet_since: float | None = None
    last: int | None = None
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            report = audit_report(client)
            counters = audit_counters(client.get("/metrics").text, ROUTE)
            audited = sum(row["audited"] for row in report["patterns"] if row["kind"] == "sample")
            # The report leaves out audits whose top tier failed; the counters count them.
            if audited + counters.failed == counters.finished and audited == last:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                    return report, counters
            else:
                quiet_since = None
            last = audited
            time.sleep(SETTLE_POLL_S)
    raise RuntimeError(f"audits did not settle within {SETTLE_TIMEOUT_S:g} s: {counters}")


def run_seed(args: argparse.Namespace, ports: Upstreams, seed: int) -> SeedResult:
    with tempfile.TemporaryDirectory() as folder:
        audit = {
            "rate": args.rate,
            "max_in_flight": args.max_in_flight,
            # Audit spend is ~rate × 10/3 of serving spend here (the top tier costs 10× a tier-0
            # call); the cap is not under test, so it is set where it never binds.
            "max_share_of_spend": 1000.0,
            "bill_to": "operator",
        }
        gateway = GatewayProcess(gateway_config(ports, Path(folder), audit), Path(folder))
        gateway.start()
        try:
            served = asyncio.run(
                serve_all(gateway.url, seed, args.requests, args.share, args.concurrency)
            )
            for problem in served.problems[:5]:
                sys.stderr.write(f"seed {seed}: {problem}\n")
            if served.problems:
                sys.stderr.write(f"seed {seed}: the gateway's log ends\n{gateway.log()}\n")
            report, counters = settle(gateway.url)
        finally:
            gateway.stop()
    row = pattern_row(report, 0, "3/3", "sample")
    if row is None:
        raise RuntimeError(f"seed {seed}: no 3/3 sample row in {report}")
    truth = 1.0 - args.share
    low, high = row["ci95"]
    return SeedResult(
        seed=seed,
        wrong=sum(is_wrong(seed, index, args.share) for index in range(args.requests)),
        served=served,
        row=row,
        counters=counters,
        contains=low <= truth <= high,
    )


def line(result: SeedResult) -> str:
    row, c = result.row, result.counters
    low, high = row["ci95"]
    gap_low, gap_high = row["gap_ci95"]
    return (
        f"{result.seed:>4} {result.wrong:>5} {result.served.as_scripted:>6} "
        f"{result.served.changed:>7} {result.served.lost:>4} {row['audited']:>7} "
        f"{row['agreed']:>6} {row['agreement']:>9.4f}  [{low:.4f}, {high:.4f}]  "
        f"{'yes' if result.contains else 'NO ':<3}  {row['traffic_share']:>5.3f} "
        f"{row['gap']:.4f} [{gap_low:.4f}, {gap_high:.4f}]  "
        f"{c.finished:>8} {c.not_run:>7} {c.failed:>6}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.05, help="p: tier 0 wrong share")
    parser.add_argument("--rate", type=float, default=0.2, help="[routes.NAME.audit] rate")
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50, help="client requests in flight")
    parser.add_argument("--needed", type=int, default=18, help="seeds that must hold")
    args = parser.parse_args()
    truth = 1.0 - args.share
    header = (
        f"audit coverage: {args.requests} requests per seed, {args.concurrency} in flight; "
        f"tier 0 = 3 endpoints, unanimously wrong on a hashed share p = {args.share:g}; "
        f"top tier always right; θ = 1; audit rate = {args.rate:g}, max_in_flight = "
        f"{args.max_in_flight}; truth 1 − p = {truth:g}; interval: the report's ci95"
    )
    sys.stdout.write(header + "\n")
    sys.stdout.write(
        "seed wrong served changed lost audited agreed agreement  ci95               contains "
        "share gap    gap_ci95          finished not_run failed\n"
    )
    sys.stdout.flush()
    started = time.monotonic()
    results: list[SeedResult] = []
    with tempfile.TemporaryDirectory() as folder, upstreams(0, 0, Path(folder)) as ports:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            results.append(run_seed(args, ports, seed))
            sys.stdout.write(line(results[-1]) + "\n")
            sys.stdout.flush()
    held = sum(result.contains for result in results)
    failures = sum(
        bool(result.served.changed or result.counters.not_run or result.counters.failed)
        for result in results
    )
    lost = sum(result.served.lost for result in results)
    audited = sum(result.row["audited"] for result in results)
    agreed = sum(result.row["agreed"] for result in results)
    sys.stdout.write(
        f"holds in {held} of {len(results)} (target >= {args.needed} of {args.seeds}); "
        f"pooled agreement {agreed}/{audited} = {agreed / audited:.4f}; "
        f"seeds with a changed answer, an audit not run or failed: {failures}; "
        f"requests lost to a transport error: {lost}; "
        f"{time.monotonic() - started:.0f} s\n"
    )
    return 0 if held >= args.needed and failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
