"""Soak: two ``coe serve`` processes on one PostgreSQL ledger, a steady request rate, faults on.

Three tier-0 upstreams fail every fifth call each (``tests/fault_server.py``: HTTP 5xx and 429,
resets, truncated and non-JSON bodies, hangs and trickles); the top tier is healthy. Requests are
started at a fixed rate (open loop: a slow answer does not slow the arrivals) and spread over both
gateways. At the end the script prints errors, latency percentiles, each process's memory and open
file descriptors at start and end, and checks the cost report and the ledger against what the
clients received.

    COE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.soak --minutes 3 --rate 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg

from gateway.stats import percentile
from gateway.tenants import new_key
from tests.fault_server import FAULTS, FaultServer, every
from tests.gateway_process import GatewayProcess

TIER0 = ("small-a", "small-b", "small-c")
KEY, DIGEST = new_key()
ADMIN_KEY, ADMIN_DIGEST = new_key()


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    wrong_answers: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    answered_ids: list[str] = field(default_factory=list)
    cost_usd: float = 0.0
    calls: int = 0
    call_statuses: Counter[str] = field(default_factory=Counter)
    exits: Counter[int] = field(default_factory=Counter)


def truth(index: int) -> str:
    return "positive" if index % 3 else "negative"


def answer(request: dict[str, Any]) -> str:
    return "positive" if "#pos" in request["messages"][-1]["content"] else "negative"


def config(urls: dict[str, str], ledger_url: str, threshold: str) -> dict[str, Any]:
    return {
        "ledger": {"url": ledger_url},
        "endpoints": [
            {
                "name": name,
                "base_url": url,
                "model": name,
                "timeout_s": 1.0,
                "max_retries": 0,
                "usd_per_mtok_in": 0.1 if name != "large" else 2.0,
                "usd_per_mtok_out": 0.2 if name != "large" else 8.0,
            }
            for name, url in urls.items()
        ],
        "routes": {
            "sentiment": {
                "labels": ["positive", "negative"],
                "threshold": threshold,
                "tiers": [list(TIER0), ["large"]],
                "deadline_s": 30,
            }
        },
        "tenants": [{"name": "soak", "api_key_sha256": [DIGEST]}],
        "admin": {"api_key_sha256": [ADMIN_DIGEST]},
    }


def sample(gateways: list[GatewayProcess]) -> list[dict[str, int]]:
    return [{"rss_kib": g.memory_kib(), "open_fds": g.open_fds()} for g in gateways]


async def load(gateways: list[GatewayProcess], minutes: float, rate: float) -> Tally:
    tally = Tally()
    total = int(minutes * 60 * rate)
    headers = {"authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(index: int) -> None:
            gateway = gateways[index % len(gateways)]
            tag = "#pos" if truth(index) == "positive" else "#neg"
            body = {"model": "sentiment",
                    "messages": [{"role": "user", "content": f"Review {index} {tag}"}]}
            started = time.perf_counter()
            try:
                response = await client.post(
                    f"{gateway.url}/v1/chat/completions", json=body, headers=headers
                )
            except httpx.TransportError as exc:
                tally.transport_errors[type(exc).__name__] += 1
                return
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            tally.statuses[response.status_code] += 1
            if response.status_code != 200:
                return
            payload = response.json()
            coe = payload["coe"]
            tally.answered_ids.append(response.headers["x-request-id"])
            tally.cost_usd += coe["cost_usd"]
            tally.calls += len(coe["calls"])
            tally.call_statuses.update(c["status"] for c in coe["calls"])
            tally.exits[coe["tier"]] += 1
            if payload["choices"][0]["message"]["content"] != truth(index):
                tally.wrong_answers += 1

        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            for index in range(total):
                # Open loop: request i starts at i / rate seconds, however long others take.
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                group.start_soon(one, index)
    return tally


def ledger_check(ledger_url: str, tally: Tally) -> dict[str, Any]:
    with psycopg.connect(ledger_url) as connection:
        recorded = {row[0] for row in connection.execute("SELECT request_id FROM coe_requests")}
        rows = connection.execute("SELECT status, count(*) FROM coe_calls GROUP BY status")
        statuses: dict[str, int] = {str(status): int(count) for status, count in rows}
    # The coe object a client receives says "error" where the ledger says "timeout".
    ledger_statuses = Counter(statuses)
    ledger_statuses["error"] += ledger_statuses.pop("timeout", 0)
    return {
        "answered_not_in_ledger": len(set(tally.answered_ids) - recorded),
        "ledger_requests": len(recorded),
        "call_statuses_match": +ledger_statuses == +tally.call_statuses,
        "ledger_call_statuses": statuses,
    }


def report_check(gateway: GatewayProcess, tally: Tally) -> dict[str, Any]:
    report = httpx.get(
        f"{gateway.url}/v1/coe/costs",
        params={"tenant": "soak"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
    ).json()
    totals = report["totals"]
    return {
        "report_requests": totals["requests"],
        "client_requests_200": tally.statuses[200],
        "report_calls": totals["calls"],
        "client_calls": tally.calls,
        "report_cost_usd": totals["cost_usd"],
        "client_cost_usd": round(tally.cost_usd, 10),
        "exits_by_tier": report["exits_by_tier"],
        "match": (
            totals["requests"] == tally.statuses[200]
            and totals["calls"] == tally.calls
            and abs(totals["cost_usd"] - tally.cost_usd) <= 1e-9 * max(1.0, tally.cost_usd)
        ),
    }


def fresh_schema(dsn: str) -> tuple[str, str]:
    schema = f"coe_soak_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in dsn else "?"
    return schema, f"{dsn}{separator}options=-csearch_path%3D{schema}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--threshold", default="2/3", help="θ of the route (1: any fault climbs)")
    parser.add_argument("--dsn", default=os.environ.get("COE_TEST_POSTGRES_DSN"))
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("a PostgreSQL DSN is needed: --dsn or COE_TEST_POSTGRES_DSN")

    servers = {name: FaultServer(name, answer).start() for name in (*TIER0, "large")}
    for offset, name in enumerate(TIER0):
        # Staggered, so one request seldom meets two faults: 20 % of calls, not of requests.
        servers[name].set_schedule(every(5, FAULTS, offset=offset * 4, phase=offset))
    schema, ledger_url = fresh_schema(args.dsn)
    folder = Path(tempfile.mkdtemp(prefix="coe-soak-"))
    urls = {name: server.base_url for name, server in servers.items()}
    gateways = [
        GatewayProcess(config(urls, ledger_url, args.threshold), folder, name=f"gateway-{i}")
        for i in range(2)
    ]
    try:
        for gateway in gateways:
            gateway.start()
        before = sample(gateways)
        started = time.monotonic()
        tally = anyio.run(load, gateways, args.minutes, args.rate)
        elapsed = time.monotonic() - started
        after = sample(gateways)
        figures = {
            "minutes": round(elapsed / 60, 2),
            "rate_per_s": args.rate,
            "threshold": args.threshold,
            "requests": sum(tally.statuses.values()) + sum(tally.transport_errors.values()),
            "statuses": dict(tally.statuses),
            "transport_errors": dict(tally.transport_errors),
            "wrong_answers": tally.wrong_answers,
            # gateway.stats.percentile: linear between closest ranks (numpy's default).
            "latency_ms": {q: round(percentile(tally.latencies_ms, p), 1)
                           for q, p in (("p50", 50), ("p99", 99), ("max", 100))}
            if tally.latencies_ms else {},
            "upstream_faults_served": sum(
                fault is not None for name in TIER0 for fault in servers[name].served
            ),
            "upstream_calls_served": sum(len(s.served) for s in servers.values()),
            "call_statuses_seen_by_clients": dict(tally.call_statuses),
            "processes_start": before,
            "processes_end": after,
            "report": report_check(gateways[0], tally),
            "ledger": ledger_check(ledger_url, tally),
        }
    finally:
        for gateway in gateways:
            gateway.stop()
        for server in servers.values():
            server.stop()
        with psycopg.connect(args.dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    ok = (
        figures["report"]["match"]
        and figures["ledger"]["answered_not_in_ledger"] == 0
        and figures["ledger"]["call_statuses_match"]
        and not any(status >= 500 for status in tally.statuses)
        and tally.wrong_answers == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
