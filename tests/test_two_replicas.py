"""Two ``coe serve`` processes on one PostgreSQL ledger: each request counted once, budgets hold."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import tomli_w

from gateway.tenants import key_digest
from tests.gateway_process import one_tier_config
from tests.ledger_fixtures import ledger_url_for
from tests.upstream import UpstreamServer

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

TENANT_KEY = "sk-tenant-acme"
CAPPED_KEY = "sk-tenant-capped"
ADMIN_KEY = "sk-admin"
# θ = 1 and three agreeing calls of 10 prompt + 2 answer tokens at $0.10/$0.20 per Mtok.
REQUEST_COST = 3 * (10 * 0.10 + 2 * 0.20) / 1e6
BUDGET_REQUESTS = 10
CONCURRENCY = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for("postgresql", tmp_path)


def write_config(path: Path, upstreams: dict[str, UpstreamServer], ledger: str, port: int) -> None:
    config: dict[str, Any] = {
        **one_tier_config(upstreams, ledger),
        "server": {"host": "127.0.0.1", "port": port},
        "tenants": [
            {"name": "acme", "api_key_sha256": [key_digest(TENANT_KEY)]},
            {
                "name": "capped",
                "api_key_sha256": [key_digest(CAPPED_KEY)],
                "budget_usd": BUDGET_REQUESTS * REQUEST_COST * 0.999,
            },
        ],
        "admin": {"api_key_sha256": [key_digest(ADMIN_KEY)]},
    }
    path.write_bytes(tomli_w.dumps(config).encode())


@pytest.fixture
def replicas(
    upstreams: dict[str, UpstreamServer], ledger_url: str, tmp_path: Path
) -> Iterator[list[str]]:
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    for index in range(2):
        port = free_port()
        config = tmp_path / f"replica-{index}.toml"
        write_config(config, upstreams, ledger_url, port)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for process, url in zip(processes, urls, strict=True):
            wait_until_healthy(process, url)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def wait_until_healthy(process: subprocess.Popen[bytes], url: str) -> None:
    # A child process offers no event to wait on; poll its health endpoint, bounded.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway at {url} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"gateway at {url} did not become healthy")


async def send_all(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    responses: list[httpx.Response] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    body = {"model": "sentiment", "messages": [{"role": "user", "content": "Lovely."}]}
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(index: int) -> None:
            async with limiter:
                url = urls[index % len(urls)]
                responses.append(
                    await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                )

        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(one, index)
    return responses


async def test_report_counts_every_request_of_both_replicas_once(
    replicas: list[str],
) -> None:
    responses = await send_all(replicas, TENANT_KEY, 60)

    assert [r.status_code for r in responses] == [200] * 60
    received = sum(r.json()["coe"]["cost_usd"] for r in responses)
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{replicas[1]}/v1/coe/costs",
            params={"tenant": "acme"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
    report = answer.json()
    assert report["totals"]["requests"] == 60
    assert report["totals"]["calls"] == 180
    assert report["totals"]["cost_usd"] == pytest.approx(received, rel=1e-9)


async def test_budget_holds_across_replicas_without_overspend(
    replicas: list[str],
) -> None:
    # Each request reserves its worst case (max_tokens out on every endpoint) before dispatch, so
    # the budget is never overspent; it serves fewer than BUDGET_REQUESTS actual costs' worth.
    responses = await send_all(replicas, CAPPED_KEY, 40)

    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == 40
    assert 1 <= len(served) <= BUDGET_REQUESTS
    assert sum(r.json()["coe"]["cost_usd"] for r in served) <= BUDGET_REQUESTS * REQUEST_COST
    assert refused[0].json()["error"]["code"] == "insufficient_quota"
