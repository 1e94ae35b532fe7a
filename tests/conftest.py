from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings, parse_settings
from tests.gateway_process import GatewayProcess
from tests.upstream import UpstreamServer

UPSTREAM_NAMES = ("small-a", "small-b", "small-c", "large")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    """`coe serve` processes a test starts (append, then start); each is stopped afterwards."""
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def upstream_pool() -> Iterator[dict[str, UpstreamServer]]:
    servers = {name: UpstreamServer(name) for name in UPSTREAM_NAMES}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.release_gates()
        server.stop()


@pytest.fixture
def upstreams(upstream_pool: dict[str, UpstreamServer]) -> Iterator[dict[str, UpstreamServer]]:
    """The four test upstreams, each answering "positive" until a test scripts otherwise."""
    for server in upstream_pool.values():
        server.script()
    yield upstream_pool
    for server in upstream_pool.values():
        server.release_gates()


def cascade_config(
    upstreams: dict[str, UpstreamServer], ledger_path: Path, **route: Any
) -> dict[str, Any]:
    """A two-tier sentiment route over the test upstreams, as a raw config dict."""
    return {
        "ledger": {"url": f"sqlite:///{ledger_path}"},
        "endpoints": [
            {
                "name": name,
                "kind": "openai",
                "base_url": server.base_url,
                "model": name,
                "timeout_s": 10,
                "max_retries": 0,
                "usd_per_mtok_in": 0.1 if name != "large" else 2.0,
                "usd_per_mtok_out": 0.2 if name != "large" else 8.0,
            }
            for name, server in upstreams.items()
        ],
        "routes": {
            "sentiment": {
                "labels": ["positive", "negative"],
                "threshold": 0.66,
                "tiers": [["small-a", "small-b", "small-c"], ["large"]],
                **route,
            }
        },
    }


@pytest.fixture
def make_settings(
    upstreams: dict[str, UpstreamServer], tmp_path: Path
) -> Any:
    def build(**route: Any) -> Settings:
        return parse_settings(cascade_config(upstreams, tmp_path / "ledger.db", **route))

    return build
