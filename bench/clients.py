"""Upstream HTTP clients side by side: CPU and wall time per call, one call and three at once.

    python -m bench.clients [--rounds 2000] [--pin]

Starts its own fake upstream (bench/fake_upstream.py) and, for each client, makes ``rounds``
sequential rounds of one call and of three calls in parallel (the tier of scenario d) after a
warm-up. Reports the p50 wall time of a round (gateway.stats.percentile) and the client
process's CPU time per call.
With ``--pin`` the upstream runs on CPU 0 and this process on CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson

from bench.fake_upstream import run_loop
from gateway.stats import percentile
from providers.http import POOL_LIMITS, make_http_client

ROOT = Path(__file__).resolve().parent.parent
PORTS = (9201, 9202, 9203)
BODY = orjson.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "Great film!"}], "max_tokens": 4}
)
HEADERS = {"content-type": "application/json", "x-request-id": "r-1"}

Call = Callable[[int], Awaitable[bytes]]


async def measure(name: str, call: Call, rounds: int, results: dict[str, dict[str, float]]) -> None:
    for port in PORTS:  # one warm connection per port, and the code paths warm
        for _ in range(50):
            await call(port)
    for label, ports in (("1 call", PORTS[:1]), ("3 calls", PORTS)):
        walls = []
        cpu0 = time.process_time()
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(call(p) for p in ports))
            walls.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu0
        results[f"{name} | {label}"] = {
            "wall_p50_ms": percentile(walls, 50) * 1000,
            "cpu_us_per_call": cpu / (rounds * len(ports)) * 1e6,
        }


async def main_async(rounds: int, which: list[str]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    url = "http://127.0.0.1:{}/v1/chat/completions"
    timeout = httpx.Timeout(None, connect=5.0)

    def via(client: httpx.AsyncClient) -> Call:
        async def call(port: int) -> bytes:
            response = await client.post(url.format(port), content=BODY, headers=HEADERS,
                                          timeout=timeout)
            return response.content
        return call

    if "httpx" in which:
        async with make_http_client(httpx.AsyncHTTPTransport(limits=POOL_LIMITS)) as client:
            await measure("httpx, own transport", via(client), rounds, results)
    if "httpx-aiohttp" in which:
        from httpx_aiohttp import AiohttpTransport as Packaged

        async with make_http_client(Packaged(limits=POOL_LIMITS)) as client:
            await measure("httpx + httpx-aiohttp 0.2 transport", via(client), rounds, results)
    if "gateway" in which:
        from providers.http import make_aiohttp_transport

        async with make_http_client(make_aiohttp_transport()) as client:
            await measure("httpx + providers.http aiohttp transport", via(client), rounds,
                          results)
    if "direct" in which:
        from providers.http import make_aiohttp_transport

        async with make_http_client(make_aiohttp_transport()) as client:
            direct = client.direct
            assert direct is not None

            async def post(port: int) -> bytes:
                response = await direct.post(url.format(port), BODY, HEADERS, timeout)
                return response.content

            await measure("providers.http AiohttpTransport.post (no client layer)", post, rounds,
                          results)
    if "aiohttp" in which:
        async with aiohttp.ClientSession() as session:
            async def call(port: int) -> bytes:
                async with session.post(url.format(port), data=BODY, headers=HEADERS) as r:
                    return await r.read()
            await measure("aiohttp directly", call, rounds, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--clients", default="httpx,httpx-aiohttp,gateway,direct,aiohttp")
    args = parser.parse_args()
    taskset = ["taskset", "-c", "0"] if args.pin else []
    upstream = subprocess.Popen(
        [*taskset, sys.executable, "-m", "bench.fake_upstream",
         *[a for p in PORTS for a in ("--endpoint", f"port={p},answer=positive")]],
        cwd=ROOT, stdout=subprocess.PIPE,
    )
    try:
        assert upstream.stdout is not None
        upstream.stdout.readline()
        if args.pin:
            os.sched_setaffinity(0, {1})
        results: dict[str, dict[str, float]] = {}

        async def go() -> None:
            results.update(await main_async(args.rounds, args.clients.split(",")))

        run_loop(go())
    finally:
        upstream.terminate()
        upstream.wait()
    print("| client | round | wall p50 ms | CPU µs per call |\n|---|---|---|---|")
    for key, value in results.items():
        name, label = key.split(" | ")
        print(f"| {name} | {label} | {value['wall_p50_ms']:.3f} | "
              f"{value['cpu_us_per_call']:.0f} |")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
