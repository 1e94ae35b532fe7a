"""Per-endpoint sampling (temperature, top_p, seed) and the GPU meter key, without a server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pydantic
import pytest
import respx

from gateway.config import RouteConfig
from gateway.engine import CascadeEngine
from gateway.plan import CoEOverrides, make_plan
from providers import (
    CallRecord,
    CallRequest,
    LlamaCppProvider,
    OpenAIProvider,
    Provider,
    RetryPolicy,
    make_http_client,
)
from providers.endpoint import EndpointConfig

URL = "http://upstream.test/v1/chat/completions"
FAST = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.002, max_retry_after_s=0.01)
REQUEST = CallRequest(messages=({"role": "user", "content": "Great film!"},), temperature=0.3)
OK = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1},
}


def endpoint(**overrides: Any) -> EndpointConfig:
    config: dict[str, Any] = {
        "name": "a",
        "kind": "openai",
        "base_url": "http://upstream.test/v1",
        "model": "m",
        "max_retries": 0,
        **overrides,
    }
    return EndpointConfig(**config)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as shared:
        yield shared


async def sent_body(
    respx_mock: respx.MockRouter,
    client: httpx.AsyncClient,
    provider_class: type[OpenAIProvider] = OpenAIProvider,
    **config: Any,
) -> dict[str, Any]:
    route = respx_mock.post(URL).mock(return_value=httpx.Response(200, json=OK))
    provider = provider_class(endpoint(**config), client, retry_policy=FAST)
    assert (await provider.complete(REQUEST)).status == "ok"
    body: dict[str, Any] = json.loads(route.calls[-1].request.content)
    return body


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_without_endpoint_sampling_the_route_temperature_is_sent_alone(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    body = await sent_body(respx_mock, client)
    assert body["temperature"] == 0.3
    assert "top_p" not in body
    assert "seed" not in body


@pytest.mark.anyio
@pytest.mark.parametrize("provider_class", [OpenAIProvider, LlamaCppProvider])
async def test_endpoint_sampling_wins_over_the_route(
    respx_mock: respx.MockRouter,
    client: httpx.AsyncClient,
    provider_class: type[OpenAIProvider],
) -> None:
    body = await sent_body(
        respx_mock, client, provider_class, kind="openai", temperature=0.9, top_p=0.8, seed=7
    )
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.9, 0.8, 7)


@pytest.mark.anyio
async def test_an_endpoint_temperature_of_zero_is_sent_as_zero(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    assert (await sent_body(respx_mock, client, temperature=0.0))["temperature"] == 0.0


@pytest.mark.anyio
async def test_extra_body_still_wins_over_endpoint_sampling(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    body = await sent_body(
        respx_mock, client, temperature=0.9, seed=7, extra_body={"temperature": 0.1, "seed": 1}
    )
    assert (body["temperature"], body["seed"]) == (0.1, 1)


@pytest.mark.parametrize(
    "bad", [{"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}, {"gpu_pool": ""}]
)
def test_out_of_range_sampling_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        endpoint(**bad)


# --- the GPU meter key -------------------------------------------------------------------------


def test_endpoints_of_one_server_share_a_meter_key() -> None:
    a = endpoint(name="a", base_url="http://gpu-1:8000/v1")
    b = endpoint(name="b", base_url="http://gpu-1:8000/v1/")
    c = endpoint(name="c", base_url="http://gpu-2:8000/v1")
    assert a.gpu_meter_key == b.gpu_meter_key != c.gpu_meter_key


def test_an_explicit_gpu_pool_wins_over_the_url() -> None:
    # Two servers sharing one GPU (e.g. two vLLM processes, --gpu-memory-utilization 0.45 each).
    a = endpoint(name="a", base_url="http://h:8001/v1", gpu_pool="gpu0")
    b = endpoint(name="b", base_url="http://h:8002/v1", gpu_pool="gpu0")
    assert a.gpu_meter_key == b.gpu_meter_key
    assert a.gpu_meter_key != endpoint(name="c", base_url="http://h:8001/v1").gpu_meter_key


def test_an_in_process_endpoint_is_its_own_pool() -> None:
    config = EndpointConfig(name="vader", kind="python", function="m:f")
    assert config.gpu_meter_key == "endpoint:vader"


class _Sleeper(Provider):
    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds

    async def complete(self, request: CallRequest) -> CallRecord:
        await anyio.sleep(self.seconds)
        return CallRecord(endpoint=self.name, status="ok", text="yes", tokens_in=1, tokens_out=1)


@pytest.mark.anyio
@pytest.mark.parametrize("pooled", [True, False])
async def test_concurrent_calls_on_one_pool_are_billed_its_wall_time_once(pooled: bool) -> None:
    names = ("a", "b", "c")
    providers = {n: _Sleeper(n, 0.2) for n in names}
    route = RouteConfig.model_validate(
        {"labels": ["yes", "no"], "threshold": 1.0, "tiers": [list(names)], "wait_for_all": True}
    )
    plan = make_plan("r", route, CoEOverrides(), {})
    pools = {n: "url:http://gpu-1/v1" if pooled else f"endpoint:{n}" for n in names}
    engine = CascadeEngine(providers, pools)
    messages = [{"role": "user", "content": "ok?"}]
    outcome = await engine.run(plan, messages, request_id="r", tenant="t")
    shares = [c.gpu_seconds for c in outcome.calls]
    # Pooled: the calls share one clock, so their shares add up to the time the server was busy,
    # at most the request's wall time. Per endpoint name (the old key) each call is billed its own
    # whole wall time: at least 3 × 0.2 s in all.
    if pooled:
        assert 0.2 - 0.01 <= sum(shares) <= outcome.latency_ms / 1000.0
    else:
        assert sum(shares) >= 0.6 - 0.01
