"""Building one provider per configured endpoint, by kind."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from gateway.config import Settings, parse_settings
from providers import (
    LlamaCppProvider,
    OpenAIProvider,
    PythonProvider,
    VLLMProvider,
    build_providers,
    make_http_client,
)
from providers.breaker import BreakerProvider
from providers.endpoint import EndpointConfig
from providers.errors import EndpointConfigError

pytestmark = pytest.mark.anyio


def http(name: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "base_url": "http://127.0.0.1:1/v1", **fields}


def settings_with(*endpoints: dict[str, Any]) -> Settings:
    return parse_settings({"endpoints": list(endpoints)})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as shared:
        yield shared


async def test_every_endpoint_gets_the_provider_of_its_kind(client: httpx.AsyncClient) -> None:
    settings = settings_with(
        http("a", "openai"),
        http("b", "vllm"),
        http("c", "llamacpp"),
        {"name": "d", "kind": "python", "function": "providers.classifiers:vader_sentiment"},
    )
    providers = build_providers(settings.endpoints, client)
    # HTTP kinds come wrapped in their circuit breaker.
    unwrapped = {n: p.inner if isinstance(p, BreakerProvider) else p for n, p in providers.items()}
    assert {name: type(p) for name, p in unwrapped.items()} == {
        "a": OpenAIProvider,
        "b": VLLMProvider,
        "c": LlamaCppProvider,
        "d": PythonProvider,
    }
    assert all(p.name == name for name, p in providers.items())


async def test_replay_provider_is_imported_only_when_configured(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[EndpointConfig] = []

    class FakeReplay:
        def __init__(self, endpoint: EndpointConfig) -> None:
            built.append(endpoint)

    module = ModuleType("providers.replay")
    module.ReplayProvider = FakeReplay  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "providers.replay", module)
    settings = settings_with({"name": "r", "kind": "replay", "recording": "run.jsonl"})
    providers = build_providers(settings.endpoints, client)
    assert isinstance(providers["r"], FakeReplay)
    assert [e.name for e in built] == ["r"]


async def test_without_replay_endpoints_the_replay_module_is_not_needed(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "providers.replay", None)  # any import of it would fail
    assert list(build_providers(settings_with(http("a", "openai")).endpoints, client)) == ["a"]


async def test_a_provider_config_error_stops_the_build(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    settings = settings_with(http("a", "openai", api_key_env="NOT_SET_KEY"))
    with pytest.raises(EndpointConfigError, match="NOT_SET_KEY"):
        build_providers(settings.endpoints, client)
