"""The Anthropic Messages API adapter (kind = "anthropic") against respx, and its pricing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from policies.pricing import Price, price_call
from providers import CallRecord, CallRequest, RetryPolicy, build_providers, make_http_client
from providers.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from providers.breaker import BreakerProvider
from providers.endpoint import HTTP_KINDS, EndpointConfig
from providers.errors import EndpointConfigError
from providers.registry import _HTTP_KINDS

pytestmark = pytest.mark.anyio

URL = "https://anthropic.test/v1/messages"
KEY = "sk-ant-test-key"
FAST = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.002, max_retry_after_s=0.01)
REQUEST = CallRequest(messages=({"role": "user", "content": "Great film!"},), request_id="req-1")


def endpoint(**overrides: Any) -> EndpointConfig:
    config: dict[str, Any] = {
        "name": "claude-a",
        "kind": "anthropic",
        "base_url": "https://anthropic.test/v1",
        "model": "claude-haiku",
        "api_key_env": "TEST_ANTHROPIC_KEY",
        "timeout_s": 5,
        "max_retries": 2,
    }
    return EndpointConfig(**{**config, **overrides})


def message(*texts: str, usage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku",
        "content": [{"type": "text", "text": text} for text in texts],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage if usage is not None else {"input_tokens": 12, "output_tokens": 1},
        **extra,
    }


def error(status: int, kind: str, text: str, **headers: str) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_up"}
    return httpx.Response(status, json=body, headers={"request-id": "req_up", **headers})


def ok(*texts: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json=message(*(texts or ("positive",)), **extra))


def sent_body(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", KEY)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as shared:
        yield shared


async def call(
    client: httpx.AsyncClient, request: CallRequest = REQUEST, **config: Any
) -> CallRecord:
    provider = AnthropicProvider(endpoint(**config), client, retry_policy=FAST)
    return await provider.complete(request)


# --- the request ------------------------------------------------------------------------------


async def test_request_goes_to_messages_with_the_key_and_version(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, base_url="https://anthropic.test/v1/")
    headers = route.calls[0].request.headers
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert headers["x-request-id"] == "req-1"
    assert "authorization" not in headers


async def test_body_carries_model_max_tokens_temperature_and_turns(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, CallRequest(messages=REQUEST.messages, max_tokens=3, temperature=0.5))
    assert sent_body(route) == {
        "model": "claude-haiku",
        "max_tokens": 3,
        "temperature": 0.5,
        "messages": [{"role": "user", "content": "Great film!"}],
    }


async def test_system_is_top_level_endpoint_prompt_first(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    messages = (
        {"role": "system", "content": "Answer with one word."},
        {"role": "developer", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": "Great film!"},
    )
    await call(client, CallRequest(messages=messages), system_prompt="You rate reviews.",
               few_shot=[{"user": "Awful.", "assistant": "negative"}])
    body = sent_body(route)
    assert body["system"] == "You rate reviews.\n\nAnswer with one word.\n\nBe terse."
    assert body["messages"] == [
        {"role": "user", "content": "Awful."},
        {"role": "assistant", "content": "negative"},
        {"role": "user", "content": "Great film!"},
    ]
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


async def test_consecutive_turns_of_one_role_are_merged_into_blocks(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    messages = (
        {"role": "user", "content": "Review one."},
        {"role": "user", "content": [{"type": "text", "text": "Review two."}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Label both."},
    )
    await call(client, CallRequest(messages=messages))
    assert sent_body(route)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Review one."},
                                     {"type": "text", "text": "Review two."}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Label both."},
    ]


async def test_no_system_key_without_system_text(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client)
    assert "system" not in sent_body(route)


async def test_images_are_translated(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
    ]
    await call(client, CallRequest(messages=({"role": "user", "content": parts},)))
    assert sent_body(route)["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "message",
    [
        {"role": "tool", "content": "42", "tool_call_id": "t1"},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
    ],
    ids=["tool-turn", "audio-part", "tool-call"],
)
async def test_untranslatable_messages_fail_without_a_call(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    record = await call(client, CallRequest(messages=(REQUEST.messages[0], message)))
    assert (record.status, record.attempts, route.call_count) == ("error", 0, 0)
    assert record.error is not None and "anthropic" in record.error


async def test_endpoint_sampling_and_extra_body_win(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, temperature=0.7, top_p=0.9, extra_body={"top_k": 5, "max_tokens": 64})
    body = sent_body(route)
    assert (body["temperature"], body["top_p"], body["top_k"], body["max_tokens"]) == (
        0.7, 0.9, 5, 64
    )


def test_an_unset_key_stops_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_ANTHROPIC_KEY")
    with pytest.raises(EndpointConfigError, match="TEST_ANTHROPIC_KEY"):
        AnthropicProvider(endpoint(), httpx.AsyncClient())


# --- the response -----------------------------------------------------------------------------


async def test_text_blocks_are_joined_and_others_skipped(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    body = message("posi", "tive")
    body["content"].insert(0, {"type": "thinking", "thinking": "hmm", "signature": "x"})
    respx_mock.post(URL).mock(return_value=httpx.Response(200, json=body))
    record = await call(client)
    assert (record.status, record.text, record.upstream_request_id) == ("ok", "positive", "msg_01")
    assert (record.tokens_in, record.tokens_out) == (12, 1)
    assert (record.cache_read_tokens, record.cache_write_tokens) == (None, None)


async def test_usage_counts_cache_tokens_in_the_prompt_and_apart(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    usage = {
        "input_tokens": 10, "output_tokens": 2,
        "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
    }
    respx_mock.post(URL).mock(return_value=ok(usage=usage))
    record = await call(client)
    assert (record.tokens_in, record.tokens_out) == (1310, 2)
    assert (record.cache_read_tokens, record.cache_write_tokens) == (1000, 300)
    assert record.cache_write_1h_tokens == 100


async def test_missing_usage_leaves_tokens_unknown(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.post(URL).mock(return_value=ok(usage={}))
    record = await call(client)
    assert (record.status, record.tokens_in, record.tokens_out) == ("ok", None, None)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200, text="<html>oops</html>"), "not JSON"),
        (httpx.Response(200, json=["x"]), "not a JSON object"),
        (httpx.Response(200, json={"id": "msg"}), "no content"),
        (httpx.Response(200, json={**message(), "content": [], "stop_reason": "refusal"}),
         "no text content (stop_reason refusal)"),
    ],
    ids=["not-json", "not-object", "no-content", "refusal"],
)
async def test_malformed_response_is_an_error(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, response: httpx.Response,
    expected: str,
) -> None:
    respx_mock.post(URL).mock(return_value=response)
    record = await call(client)
    assert record.status == "error"
    assert record.error is not None and expected in record.error


# --- errors and retries -----------------------------------------------------------------------


async def test_a_request_error_is_final_and_names_anthropics_type(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(
        return_value=error(400, "invalid_request_error", "max_tokens: Field required")
    )
    record = await call(client)
    assert (record.status, record.http_status, route.call_count) == ("error", 400, 1)
    assert record.error == "HTTP 400: invalid_request_error: max_tokens: Field required"
    assert record.upstream_request_id == "req_up"


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_error_bodies_are_withheld(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, status: int
) -> None:
    respx_mock.post(URL).mock(
        return_value=error(status, "authentication_error", f"invalid x-api-key {KEY}")
    )
    record = await call(client)
    assert (record.error, record.http_status) == (f"HTTP {status}", status)


async def test_overloaded_529_is_retried_like_503(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(
        side_effect=[error(529, "overloaded_error", "Overloaded"), ok()]
    )
    record = await call(client)
    assert (record.status, record.attempts, route.call_count) == ("ok", 2, 2)


async def test_overloaded_to_the_end_is_recorded_as_529(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=error(529, "overloaded_error", "Overloaded"))
    record = await call(client)
    assert (record.status, record.http_status, record.attempts) == ("error", 529, 3)
    assert route.call_count == 3
    assert record.error == "HTTP 529: overloaded_error: Overloaded"


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")]
)
async def test_retry_after_is_honoured(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, status: int, kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("providers.retry.anyio.sleep", sleep)
    respx_mock.post(URL).mock(
        side_effect=[error(status, kind, "slow down", **{"retry-after": "0.005"}), ok()]
    )
    record = await call(client)
    assert (record.status, record.attempts) == ("ok", 2)
    assert waits == [0.005]


async def test_a_retry_after_beyond_the_timeout_ends_the_call(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(
        return_value=error(529, "overloaded_error", "Overloaded", **{"retry-after": "60"})
    )
    record = await call(client, timeout_s=1)
    assert (record.status, record.http_status, route.call_count) == ("error", 529, 1)


async def test_connect_errors_are_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.post(URL).mock(side_effect=[httpx.ConnectError("refused"), ok()])
    record = await call(client)
    assert (record.status, record.attempts) == ("ok", 2)


# --- configuration and registry ---------------------------------------------------------------


def test_anthropic_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        endpoint(base_url="")


def test_every_http_kind_has_an_adapter() -> None:
    assert set(_HTTP_KINDS) == set(HTTP_KINDS)


async def test_registry_builds_it_behind_a_breaker(client: httpx.AsyncClient) -> None:
    providers = build_providers([endpoint()], client)
    provider = providers["claude-a"]
    assert isinstance(provider, BreakerProvider)
    assert isinstance(provider.inner, AnthropicProvider)


# --- pricing ----------------------------------------------------------------------------------


def test_cache_tokens_are_priced_as_anthropic_prices_them() -> None:
    price = Price(usd_per_mtok_in=3.0, usd_per_mtok_out=15.0)
    # 10 uncached, 200 written for 5 minutes, 100 for an hour, 1000 read; 2 out.
    cost = price_call(price, 1310, 2, 0.0, cache_read_tokens=1000, cache_write_tokens=300,
                      cache_write_1h_tokens=100)
    expected = (10 * 3.0 + 200 * 3.75 + 100 * 6.0 + 1000 * 0.3 + 2 * 15.0) / 1e6
    assert cost.usd == pytest.approx(expected)


def test_without_cache_tokens_the_price_is_unchanged() -> None:
    price = Price(usd_per_mtok_in=3.0, usd_per_mtok_out=15.0)
    assert price_call(price, 100, 10, 0.0).usd == pytest.approx((300 + 150) / 1e6)
