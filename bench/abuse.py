"""Abusive clients against one ``coe serve``: does a well-behaved client keep its latency?

One process, loopback only, bounded in time (about 75 s with the defaults). A well-behaved tenant
sends ``--rate`` requests a second (open loop) for a baseline phase alone, then for an attack phase
while, at once:

- a slowloris: ``--slowloris`` connections, each sending one header byte a second and reconnecting
  when the gateway closes it (``server.header_timeout_s``);
- an idle flood: ``--idle`` connections that send nothing, reconnecting when closed;
- a noisy tenant sending ten times the well-behaved rate, refused 429 past
  ``server.max_concurrent_requests_per_tenant`` (set to ``--tenant-limit`` here).

The route's one member is an in-process classifier that takes ``--upstream-ms``. The script prints
the well-behaved client's latency percentiles in both phases (the same run), its errors, the
noisy tenant's answers, how often the attackers were cut off, and the gateway's open files.

    .venv/bin/python -m bench.abuse            # the figures in bench/RELIABILITY.md
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.stats import percentile
from gateway.tenants import key_digest
from tests.gateway_process import GatewayProcess

GOOD_KEY = "sk-coe-bench-good"
NOISY_KEY = "sk-coe-bench-noisy"
BODY = {"model": "slow", "messages": [{"role": "user", "content": "hello"}]}
UPSTREAM_S = 0.02


def slow_positive(text: str) -> str:
    """The route's member (``kind = "python"``): ``UPSTREAM_S`` of work, then an answer."""
    time.sleep(UPSTREAM_S if text else 0)
    return "positive"


def config(folder: Path, tenant_limit: int) -> dict[str, Any]:
    return {
        # header_timeout_s, keepalive_timeout_s and max_connections at their defaults.
        "server": {"max_concurrent_requests_per_tenant": tenant_limit},
        "ledger": {"url": f"sqlite:///{folder / 'ledger.db'}"},
        "endpoints": [{"name": "slow", "kind": "python", "function": "bench.abuse:slow_positive"}],
        "routes": {"slow": {"labels": ["positive", "negative"], "tiers": [["slow"]]}},
        "tenants": [
            {"name": "good", "api_key_sha256": [key_digest(GOOD_KEY)]},
            {"name": "noisy", "api_key_sha256": [key_digest(NOISY_KEY)]},
        ],
    }


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cut_off: int = 0  # attacker connections the gateway closed
    opened: int = 0


async def paced(
    client: httpx.AsyncClient, key: str, rate: float, seconds: float, tally: Tally
) -> None:
    """``rate`` requests a second for ``seconds``, each started on time (open loop)."""

    async def one() -> None:
        started = time.perf_counter()
        try:
            response = await client.post(
                "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
            )
            tally.statuses[response.status_code] += 1
            if response.status_code == 200:
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        except httpx.HTTPError:
            tally.statuses[0] += 1

    tasks = []
    start = time.perf_counter()
    for index in range(int(rate * seconds)):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)


async def slowloris(port: int, stop: asyncio.Event, tally: Tally) -> None:
    trickle = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 10_000
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        tally.opened += 1
        try:
            for byte in trickle:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if not await asyncio.wait_for(reader.read(4096), timeout=1.0):
                        break  # closed by the gateway
                    await reader.read()  # the 408; then the close
                    break
                except TimeoutError:
                    if stop.is_set():
                        return
            tally.cut_off += 1
        except OSError:
            tally.cut_off += 1
        finally:
            writer.close()


async def idle(port: int, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        tally.opened += 1
        try:
            while not stop.is_set():
                try:
                    if not await asyncio.wait_for(reader.read(4096), timeout=1.0):
                        tally.cut_off += 1
                        break
                except TimeoutError:
                    continue
        except OSError:
            tally.cut_off += 1
        finally:
            writer.close()


def progress(what: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {what}\n")
    sys.stderr.flush()


def summary(name: str, tally: Tally) -> str:
    lat = sorted(tally.latencies_ms)
    figures = (
        f"p50 {percentile(lat, 50):.1f} ms  p99 {percentile(lat, 99):.1f} ms  max {lat[-1]:.1f} ms"
        if lat
        else "no answers"
    )
    statuses = ", ".join(
        f"{k or 'transport error'}: {v}" for k, v in sorted(tally.statuses.items())
    )
    return f"{name:<22} {len(lat):>5} answered  {figures}  ({statuses})"


async def run(args: argparse.Namespace, gateway: GatewayProcess) -> int:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:
        await paced(client, GOOD_KEY, args.rate, 1.0, Tally())  # warm up
        progress("baseline")
        baseline = Tally()
        await paced(client, GOOD_KEY, args.rate, args.phase_s, baseline)

        stop = asyncio.Event()
        loris, idlers, noisy, attacked = Tally(), Tally(), Tally(), Tally()
        attackers = [
            asyncio.create_task(slowloris(gateway.port, stop, loris)) for _ in range(args.slowloris)
        ]
        attackers += [
            asyncio.create_task(idle(gateway.port, stop, idlers)) for _ in range(args.idle)
        ]
        noise = asyncio.create_task(
            paced(client, NOISY_KEY, 10 * args.rate, args.ramp_s + args.phase_s, noisy)
        )
        progress("attack starts")
        await asyncio.sleep(args.ramp_s)
        progress("attack measured")
        peak_fds = gateway.open_fds()
        await paced(client, GOOD_KEY, args.rate, args.phase_s, attacked)
        peak_fds = max(peak_fds, gateway.open_fds())
        await noise
        progress("attack ends")
        stop.set()
        if attackers:
            await asyncio.wait(attackers, timeout=15)
        for task in attackers:
            task.cancel()

    ratio = percentile(sorted(attacked.latencies_ms), 99) / percentile(
        sorted(baseline.latencies_ms), 99
    )
    lines = [
        f"coe serve, defaults but max_concurrent_requests_per_tenant = {args.tenant_limit}; "
        f"member: in-process classifier, {args.upstream_ms} ms",
        f"phases: baseline {args.phase_s:g} s, then attack ({args.ramp_s:g} s ramp + "
        f"{args.phase_s:g} s measured); well-behaved rate {args.rate:g}/s, noisy "
        f"{10 * args.rate:g}/s",
        summary("well-behaved, alone", baseline),
        summary("well-behaved, attack", attacked),
        f"p99 under attack / p99 alone: {ratio:.2f} (target <= 2)",
        summary("noisy tenant (10x)", noisy),
        f"slowloris: {args.slowloris} connections, {loris.opened} opened, "
        f"{loris.cut_off} closed by the gateway",
        f"idle flood: {args.idle} connections, {idlers.opened} opened, "
        f"{idlers.cut_off} closed by the gateway",
        f"gateway open files during the attack: {peak_fds}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    errors = baseline.statuses.total() - baseline.statuses[200]
    errors += attacked.statuses.total() - attacked.statuses[200]
    return 0 if ratio <= 2 and errors == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="well-behaved requests/s")
    parser.add_argument("--phase-s", type=float, default=25.0)
    parser.add_argument("--ramp-s", type=float, default=5.0)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--tenant-limit", type=int, default=4)
    parser.add_argument("--upstream-ms", type=int, default=int(UPSTREAM_S * 1000))
    args = parser.parse_args()
    if args.upstream_ms != int(UPSTREAM_S * 1000):
        parser.error("--upstream-ms is fixed by bench.abuse.UPSTREAM_S")
    with tempfile.TemporaryDirectory() as folder:
        gateway = GatewayProcess(config(Path(folder), args.tenant_limit), Path(folder))
        gateway.start()
        try:
            return asyncio.run(run(args, gateway))
        finally:
            gateway.stop()


if __name__ == "__main__":
    sys.exit(main())
