"""The benchmark harness's own parts answer and count as bench/run.py relies on (no timings)."""

from __future__ import annotations

import asyncio
import functools
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import httpx
import orjson
import pytest

from bench.fake_upstream import FakeUpstream, parse_script
from bench.floor_app import ANSWER, FloorApp
from bench.loadgen import Generator, _parse_response, build_payloads, quantiles
from bench.run import cpu_seconds

pytestmark = pytest.mark.anyio

BODY = orjson.dumps({"model": "fake", "messages": [{"role": "user", "content": "Great film!"}]})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    port = free_port()
    script = parse_script(f"port={port},answer=positive,split=neutral")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(functools.partial(FakeUpstream, script), "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    server.close()
    await server.wait_closed()


def content(response: httpx.Response) -> str:
    answer: str = response.json()["choices"][0]["message"]["content"]
    return answer


async def test_the_fake_upstream_answers_its_script(upstream: str) -> None:
    split = orjson.dumps({"messages": [{"role": "user", "content": "Great film! #split"}]})
    async with httpx.AsyncClient() as client:
        plain = await client.post(upstream, content=BODY)
        scripted = await client.post(upstream, content=split)
    assert (content(plain), content(scripted)) == ("positive", "neutral")


async def test_the_load_generator_counts_every_answer(upstream: str) -> None:
    generator = Generator(
        "127.0.0.1", int(upstream.split(":")[2].split("/")[0]),
        build_payloads(upstream, BODY, []), split_every=2,
    )
    try:
        await generator.run(500.0, 20, record=True)
    finally:
        generator.close()
    stats = generator.stats
    assert stats.statuses == {200: 20}
    assert (len(stats.latencies), len(stats.split_latencies), stats.failures) == (10, 10, 0)


def test_a_chunked_response_is_read_whole() -> None:
    raw = bytearray(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\nX'
    )
    assert _parse_response(raw) == (200, b'{"a":1}', len(raw) - 1, False)
    assert _parse_response(raw[:30]) is None


def test_a_response_closing_its_connection_says_so() -> None:
    raw = bytearray(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    assert _parse_response(raw) == (200, b"ok", len(raw), True)


def test_quantiles_are_gateway_stats_percentiles_in_milliseconds() -> None:
    result = quantiles([i / 1000 for i in range(1, 101)])
    # Linear between closest ranks (gateway.stats.percentile, numpy's default), not nearest rank.
    assert (result["p50"], result["p90"], result["p99"], result["max"]) == pytest.approx(
        (50.5, 90.1, 99.01, 100.0)
    )
    assert quantiles([]) == {}


async def test_the_floor_proxy_returns_the_upstreams_answer(upstream: str) -> None:
    app = FloorApp("proxy", upstream.removesuffix("/chat/completions"))
    app.session = aiohttp.ClientSession()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            response = await client.post("http://floor/v1/chat/completions", content=BODY)
    finally:
        await app.session.close()
    assert content(response) == "positive"


async def test_the_floor_answer_mode_makes_no_upstream_call() -> None:
    app = FloorApp("answer", "http://127.0.0.1:9/v1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        response = await client.post("http://floor/v1/chat/completions", content=BODY)
    assert response.content == ANSWER


# A parent that forks one worker; the worker burns 0.3 s of CPU, says so, then waits for stdin.
_FORKING_SERVER = """
import os, sys, time
if os.fork() == 0:
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    print("burnt", flush=True)
    sys.stdin.read()
    os._exit(0)
os.wait()
"""


def test_cpu_time_counts_the_workers_a_server_forks() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _FORKING_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        try:
            assert process.stdout.readline() == b"burnt\n"
            assert cpu_seconds(process.pid) >= 0.25
        finally:
            process.stdin.close()
