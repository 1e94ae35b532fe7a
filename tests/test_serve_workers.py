"""``coe serve --workers N``: several worker processes on one port, under one supervisor.

``/metrics`` sums every worker whichever answers the scrape; a hard budget holds across four
workers on one SQLite file (and on one PostgreSQL); SIGTERM drains every worker (the request in
flight is answered and recorded); SIGHUP reaches every worker's config; a worker that cannot start
stops them all; a worker killed is replaced.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from gateway.config import ServerConfig
from gateway.tenants import key_digest
from gateway.workers import worker_count
from tests.gateway_process import GatewayProcess, one_tier_config
from tests.ledger_fixtures import BACKENDS, fresh_query, ledger_url_for
from tests.test_budgets_hard import burst, check_budget_held
from tests.test_budgets_hard import config as budget_config
from tests.test_reliability_crash import post_in_thread, recorded
from tests.upstream import Gate, Reply, UpstreamServer

KEY_A = "sk-coe-test-alice"
KEY_B = "sk-coe-test-bob"
ADMIN = "sk-coe-test-admin"
BODY = {"model": "sentiment", "messages": [{"role": "user", "content": "positive"}]}


def echo_config(folder: Path, keys: dict[str, str]) -> dict[str, Any]:
    return {
        "ledger": {"url": f"sqlite:///{folder / 'ledger.db'}"},
        "endpoints": [
            {"name": "echo", "kind": "python", "function": "builtins:str", "usd_per_mtok_in": 0.1}
        ],
        "routes": {"sentiment": {"labels": ["positive", "negative"], "tiers": [["echo"]]}},
        "tenants": [
            {"name": tenant, "api_key_sha256": [key_digest(key)]} for tenant, key in keys.items()
        ],
        "admin": {"api_key_sha256": [key_digest(ADMIN)]},
    }


def start(gateways: list[GatewayProcess], gateway: GatewayProcess) -> GatewayProcess:
    gateways.append(gateway)
    gateway.start()
    wait_for(lambda: len(gateway.worker_pids()) == expected_workers(gateway), "workers up")
    return gateway


def expected_workers(gateway: GatewayProcess) -> int:
    return int(gateway.config_path.read_text().split("workers = ")[1].split()[0])


def wait_for(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(gateway: GatewayProcess) -> dict[str, float]:
    """Sample name with labels → value, on a new connection (any worker may answer)."""
    answer = httpx.get(
        f"{gateway.url}/metrics", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    text = answer.text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def ask(gateway: GatewayProcess, key: str) -> httpx.Response:
    # A new connection each time, so the requests spread over the workers.
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_worker_count_zero_means_one_per_core() -> None:
    assert ServerConfig().workers == 1
    assert worker_count(0) == (os.cpu_count() or 1)
    assert worker_count(3) == 3


def test_metrics_sum_every_worker_whichever_answers(
    tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    gateway = start(
        gateways, GatewayProcess(echo_config(tmp_path, {"alice": KEY_A}), tmp_path, workers=2)
    )
    requests = 40
    for _ in range(requests):
        assert ask(gateway, KEY_A).status_code == 200
    for _ in range(10):
        samples = scrape(gateway)
        assert total(samples, "coe_requests_total") == requests
        assert total(samples, "coe_request_duration_seconds_count") == requests
        assert samples["coe_ledger_available"] == 1.0
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ((rows,),) = fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_requests")
    assert rows == requests


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


@pytest.mark.anyio
@pytest.mark.reliability
async def test_four_workers_on_one_ledger_keep_a_hard_budget(
    upstreams: dict[str, UpstreamServer],
    ledger_url: str,
    tmp_path: Path,
    gateways: list[GatewayProcess],
) -> None:
    gateway = start(
        gateways, GatewayProcess(budget_config(upstreams, ledger_url), tmp_path, workers=4)
    )
    responses = await burst([gateway.url])
    check_budget_held(responses, ledger_url, f"4 workers, {ledger_url.split(':')[0]}")


@pytest.mark.reliability
def test_sigterm_drains_every_worker_and_records_the_request_in_flight(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    held = Gate()
    upstreams["small-a"].script(Reply(gate=held))
    gateway = start(
        gateways,
        GatewayProcess(
            one_tier_config(upstreams, ledger_url),
            tmp_path,
            workers=2,
            args=("--drain-timeout", "20"),
        ),
    )
    workers = gateway.worker_pids()
    results: list[httpx.Response | Exception] = []
    thread = post_in_thread(gateway.url, results)
    assert held.entered.wait(10)

    gateway.signal(signal.SIGTERM)
    time.sleep(0.5)  # the workers have the SIGTERM and are draining
    held.open()
    thread.join(30)
    code = gateway.wait(20)

    [during] = results
    assert isinstance(during, httpx.Response), during
    assert during.status_code == 200
    assert code == 0, gateway.log()
    assert recorded(ledger_url, [during.headers["x-request-id"]]) == {
        during.headers["x-request-id"]
    }
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_sighup_reloads_every_worker(tmp_path: Path, gateways: list[GatewayProcess]) -> None:
    gateway = start(
        gateways, GatewayProcess(echo_config(tmp_path, {"alice": KEY_A}), tmp_path, workers=2)
    )
    [before] = [k for k, v in scrape(gateway).items() if k.startswith("coe_config_info")]
    assert ask(gateway, KEY_B).status_code == 401
    data = echo_config(tmp_path, {"alice": KEY_A, "bob": KEY_B})
    gateway.config_path.write_text(
        tomli_w.dumps({**data, "server": {"port": gateway.port, "workers": 2}})
    )

    gateway.signal(signal.SIGHUP)

    # coe_config_info is the live workers' max: the old version reads 0 once no worker serves it.
    def reloaded() -> bool:
        samples = scrape(gateway)
        return samples.get(before) == 0.0 and total(samples, "coe_config_info") == 1.0
    wait_for(reloaded, "every worker to reload")
    assert all(ask(gateway, KEY_B).status_code == 200 for _ in range(10))
    assert len(gateway.worker_pids()) == 2


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    data = echo_config(tmp_path, {"alice": KEY_A})
    data["ledger"]["url"] = f"sqlite:///{tmp_path / 'missing' / 'ledger.db'}"
    gateway = GatewayProcess(data, tmp_path, workers=2)
    try:
        with pytest.raises(RuntimeError, match="exited with 3"):
            gateway.start()
    finally:
        gateway.stop()


def test_a_killed_worker_is_replaced(tmp_path: Path, gateways: list[GatewayProcess]) -> None:
    gateway = start(
        gateways, GatewayProcess(echo_config(tmp_path, {"alice": KEY_A}), tmp_path, workers=2)
    )
    first, second = gateway.worker_pids()
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: len(gateway.worker_pids()) == 2 and first not in gateway.worker_pids(),
        "a replacement worker",
    )
    assert second in gateway.worker_pids()
    assert all(ask(gateway, KEY_A).status_code == 200 for _ in range(10))
