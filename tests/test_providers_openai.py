"""The OpenAI-compatible adapter and its vLLM and llama.cpp dialects, against respx."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import respx

from providers import (
    CallRecord,
    CallRequest,
    LlamaCppProvider,
    OpenAIProvider,
    RetryPolicy,
    TokenLogprob,
    VLLMProvider,
    make_http_client,
)
from providers.endpoint import EndpointConfig
from providers.errors import EndpointConfigError

pytestmark = pytest.mark.anyio

URL = "http://upstream.test/v1/chat/completions"
FAST = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.002, max_retry_after_s=0.01)
REQUEST = CallRequest(messages=({"role": "user", "content": "Great film!"},), request_id="req-1")


def endpoint(**overrides: Any) -> EndpointConfig:
    config: dict[str, Any] = {
        "name": "small-a",
        "kind": "openai",
        "base_url": "http://upstream.test/v1",
        "model": "served-model",
        "timeout_s": 5,
        "max_retries": 2,
    }
    return EndpointConfig(**{**config, **overrides})


def completion(content: Any = "positive", **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
    if "logprobs" in extra:
        choice["logprobs"] = extra.pop("logprobs")
    body: dict[str, Any] = {
        "id": "cmpl-42",
        "choices": [choice],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
    return {**body, **extra}


def ok(**extra: Any) -> httpx.Response:
    return httpx.Response(200, json=completion(**extra))


def sent_body(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as shared:
        yield shared


async def call(
    client: httpx.AsyncClient,
    request: CallRequest = REQUEST,
    provider_class: type[OpenAIProvider] = OpenAIProvider,
    **config: Any,
) -> CallRecord:
    provider = provider_class(endpoint(**config), client, retry_policy=FAST)
    return await provider.complete(request)


# --- answers -----------------------------------------------------------------------------------


async def test_ok_answer_carries_text_usage_and_upstream_id(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.post(URL).mock(return_value=ok())
    record = await call(client)
    assert (record.endpoint, record.status, record.text) == ("small-a", "ok", "positive")
    assert (record.tokens_in, record.tokens_out) == (12, 1)
    assert record.upstream_request_id == "cmpl-42"
    assert record.attempts == 1
    assert record.latency_ms > 0


async def test_request_body_carries_model_messages_and_sampling(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, CallRequest(messages=REQUEST.messages, max_tokens=3, temperature=0.5))
    assert sent_body(route) == {
        "model": "served-model",
        "messages": [{"role": "user", "content": "Great film!"}],
        "max_tokens": 3,
        "temperature": 0.5,
    }


async def test_logprobs_asked_for_only_when_requested(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, CallRequest(messages=REQUEST.messages, logprobs=True, top_logprobs=3))
    assert sent_body(route)["logprobs"] is True
    assert sent_body(route)["top_logprobs"] == 3


async def test_extra_body_is_merged_over_the_body(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, extra_body={"seed": 7, "temperature": 0.2})
    assert sent_body(route)["seed"] == 7
    assert sent_body(route)["temperature"] == 0.2


async def test_unserialisable_request_is_an_error_without_a_call(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    record = await call(client, CallRequest(messages=({"role": "user", "content": {1, 2}},)))
    assert (record.status, record.attempts, route.call_count) == ("error", 0, 0)
    assert record.error is not None and "JSON" in record.error


async def test_usage_absent_leaves_tokens_unknown(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    body = completion()
    del body["usage"]
    respx_mock.post(URL).mock(return_value=httpx.Response(200, json=body))
    record = await call(client)
    assert record.status == "ok"
    assert (record.tokens_in, record.tokens_out) == (None, None)


async def test_logprobs_are_parsed(respx_mock: respx.MockRouter, client: httpx.AsyncClient) -> None:
    logprobs = {
        "content": [
            {
                "token": "pos",
                "logprob": -0.1,
                "top_logprobs": [
                    {"token": "pos", "logprob": -0.1},
                    {"token": "neg", "logprob": -2},
                ],
            },
            {"token": "itive", "logprob": 0, "top_logprobs": []},
        ]
    }
    respx_mock.post(URL).mock(return_value=ok(logprobs=logprobs))
    record = await call(client)
    assert record.logprobs == (
        TokenLogprob("pos", -0.1, (("pos", -0.1), ("neg", -2.0))),
        TokenLogprob("itive", 0.0, ()),
    )


async def test_unreadable_logprobs_are_dropped_not_fatal(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.post(URL).mock(return_value=ok(logprobs={"content": [{"token": "pos"}]}))
    record = await call(client)
    assert (record.status, record.logprobs) == ("ok", None)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200, text="<html>oops</html>"), "not JSON"),
        (httpx.Response(200, json=["not", "an", "object"]), "not a JSON object"),
        (httpx.Response(200, json={"id": "x"}), "no choices"),
        (httpx.Response(200, json={"choices": []}), "empty choices"),
        (httpx.Response(200, json=completion(content=None)), "content"),
        (httpx.Response(200, json={"choices": [{"index": 0}]}), "content"),
    ],
    ids=["not-json", "not-object", "no-choices", "empty-choices", "null-content", "no-message"],
)
async def test_malformed_response_is_an_error(
    respx_mock: respx.MockRouter,
    client: httpx.AsyncClient,
    response: httpx.Response,
    expected: str,
) -> None:
    respx_mock.post(URL).mock(return_value=response)
    record = await call(client)
    assert record.status == "error"
    assert record.error is not None and "malformed response" in record.error
    assert expected in record.error
    assert record.attempts == 1


# --- headers and the key -----------------------------------------------------------------------


async def test_request_id_is_forwarded(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client)
    assert route.calls[0].request.headers["x-request-id"] == "req-1"


async def test_bearer_key_is_sent_and_never_logged(
    respx_mock: respx.MockRouter,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-test-very-secret-0123456789"
    monkeypatch.setenv("SMALL_A_KEY", secret)
    route = respx_mock.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"retry-after": "0"}), httpx.Response(400)]
    )
    caplog.set_level(logging.DEBUG)
    record = await call(client, api_key_env="SMALL_A_KEY")
    assert route.calls[0].request.headers["authorization"] == f"Bearer {secret}"
    assert caplog.records, "the retry path logs at debug level"
    for entry in caplog.records:
        assert secret not in entry.getMessage()
    assert secret not in (record.error or "")


async def test_missing_key_variable_is_a_config_error(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(EndpointConfigError, match=r"'small-a'.*'NO_SUCH_KEY'"):
        OpenAIProvider(endpoint(api_key_env="NO_SUCH_KEY"), client)


async def test_key_is_read_once_at_construction(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMALL_A_KEY", "first")
    provider = OpenAIProvider(endpoint(api_key_env="SMALL_A_KEY"), client)
    monkeypatch.setenv("SMALL_A_KEY", "second")
    route = respx_mock.post(URL).mock(return_value=ok())
    await provider.complete(REQUEST)
    assert route.calls[0].request.headers["authorization"] == "Bearer first"


# --- retries -----------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"retry-after": "1"}), ok()]
    )
    record = await call(client)
    assert route.call_count == 2
    assert (record.status, record.attempts, record.text) == ("ok", 2, "positive")


async def test_retry_after_beyond_the_time_left_gives_up(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"retry-after": "30"}), ok()]
    )
    record = await call(client, timeout_s=5)
    assert route.call_count == 1
    assert (record.status, record.attempts) == ("error", 1)
    assert record.error is not None and record.error.startswith("HTTP 429")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, status: int
) -> None:
    respx_mock.post(URL).mock(side_effect=[httpx.Response(status), ok()])
    record = await call(client)
    assert (record.status, record.attempts) == ("ok", 2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, status: int
) -> None:
    route = respx_mock.post(URL).mock(
        side_effect=[httpx.Response(status, json={"error": {"message": "bad"}}), ok()]
    )
    record = await call(client)
    assert route.call_count == 1
    assert (record.status, record.attempts) == ("error", 1)
    assert record.error is not None and record.error.startswith(f"HTTP {status}")
    # An auth failure's body can quote the operator's upstream key; the others help the client.
    assert ("bad" in record.error) is (status not in (401, 403))


async def test_retries_stop_at_max_retries(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=httpx.Response(503))
    record = await call(client, max_retries=2)
    assert route.call_count == 3
    assert (record.status, record.attempts) == ("error", 3)


async def test_no_retries_when_max_retries_is_zero(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(side_effect=[httpx.Response(503), ok()])
    record = await call(client, max_retries=0)
    assert route.call_count == 1
    assert record.attempts == 1


async def test_connect_error_is_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.post(URL).mock(side_effect=[httpx.ConnectError("refused"), ok()])
    record = await call(client)
    assert (record.status, record.attempts) == ("ok", 2)


async def test_connection_dropped_before_response_is_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    respx_mock.post(URL).mock(side_effect=[dropped, ok()])
    record = await call(client)
    assert (record.status, record.attempts) == ("ok", 2)


async def test_connect_errors_to_the_end_are_an_error(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    record = await call(client, max_retries=1)
    assert (record.status, record.attempts) == ("error", 2)
    assert record.error == "ConnectError: refused"


# --- time and cancellation ---------------------------------------------------------------------


async def test_read_timeout_is_a_timeout_and_not_retried(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(side_effect=[httpx.ReadTimeout("slow"), ok()])
    record = await call(client)
    assert route.call_count == 1
    assert (record.status, record.attempts) == ("timeout", 1)


async def test_endpoint_timeout_bounds_the_call(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    never = anyio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    respx_mock.post(URL).mock(side_effect=hang)
    record = await call(client, timeout_s=0.05)
    assert record.status == "timeout"
    assert record.error == "no answer within 0.05 s"
    assert record.attempts == 1
    assert record.latency_ms >= 50


async def test_timeout_covers_retries(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    never = anyio.Event()
    calls = 0

    async def fail_then_hang(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(503)
        await never.wait()
        raise AssertionError("unreachable")

    respx_mock.post(URL).mock(side_effect=fail_then_hang)
    record = await call(client, timeout_s=0.1)
    assert (record.status, record.attempts) == ("timeout", 2)


async def test_cancellation_propagates(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    entered, never = anyio.Event(), anyio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        entered.set()
        await never.wait()
        raise AssertionError("unreachable")

    respx_mock.post(URL).mock(side_effect=hang)
    records: list[CallRecord] = []

    async def run() -> None:
        records.append(await call(client))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await entered.wait()
        group.cancel_scope.cancel()
    assert records == []


async def test_concurrency_limit_holds_calls_back(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    first_in, release = anyio.Event(), anyio.Event()
    arrivals = 0

    async def held(request: httpx.Request) -> httpx.Response:
        nonlocal arrivals
        arrivals += 1
        if arrivals == 1:
            first_in.set()
            await release.wait()
        return ok()

    respx_mock.post(URL).mock(side_effect=held)
    provider = OpenAIProvider(endpoint(max_concurrency=1), client, retry_policy=FAST)
    records: list[CallRecord] = []

    async def run() -> None:
        records.append(await provider.complete(REQUEST))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await first_in.wait()
        group.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert arrivals == 1
        release.set()
    assert arrivals == 2
    assert [r.status for r in records] == ["ok", "ok"]


# --- vLLM --------------------------------------------------------------------------------------


CLASSIFY = CallRequest(messages=REQUEST.messages, answer_set=("positive", "negative"))


async def test_vllm_constrains_with_structured_outputs(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, CLASSIFY, VLLMProvider, kind="vllm")
    body = sent_body(route)
    assert body["structured_outputs"] == {"choice": ["positive", "negative"]}
    assert "guided_choice" not in body


async def test_vllm_before_0_12_takes_guided_choice(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, CLASSIFY, VLLMProvider, kind="vllm", vllm_choice_field="guided_choice")
    body = sent_body(route)
    assert body["guided_choice"] == ["positive", "negative"]
    assert "structured_outputs" not in body


async def test_vllm_always_asks_for_logprobs(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, REQUEST, VLLMProvider, kind="vllm")
    body = sent_body(route)
    assert (body["logprobs"], body["top_logprobs"]) == (True, REQUEST.top_logprobs)
    assert "structured_outputs" not in body


# --- llama.cpp ---------------------------------------------------------------------------------


async def test_llamacpp_constrains_with_a_grammar(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, CLASSIFY, LlamaCppProvider, kind="llamacpp")
    body = sent_body(route)
    assert body["grammar"] == 'root ::= "positive" | "negative"'
    assert body["max_tokens"] >= 8
    assert "logprobs" not in body


async def test_llamacpp_grammar_escapes_labels(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    request = CallRequest(messages=REQUEST.messages, answer_set=('say "hi"', "back\\slash"))
    await call(client, request, LlamaCppProvider, kind="llamacpp")
    assert sent_body(route)["grammar"] == r'root ::= "say \"hi\"" | "back\\slash"'


async def test_llamacpp_without_answer_set_sends_no_grammar(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    request = CallRequest(messages=REQUEST.messages, max_tokens=3, logprobs=True)
    await call(client, request, LlamaCppProvider, kind="llamacpp")
    body = sent_body(route)
    assert "grammar" not in body
    assert body["max_tokens"] == 3
    assert body["logprobs"] is True


async def test_llamacpp_system_prompt_goes_into_the_user_turn(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, REQUEST, LlamaCppProvider, kind="llamacpp", system_prompt="Be terse.")
    assert sent_body(route)["messages"] == [
        {"role": "user", "content": "Be terse.\n\nGreat film!"}
    ]


async def test_llamacpp_gets_a_stable_uuid_for_a_client_request_id(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    await call(client, REQUEST, LlamaCppProvider, kind="llamacpp")
    await call(client, REQUEST, LlamaCppProvider, kind="llamacpp")
    sent = [uuid.UUID(c.request.headers["x-request-id"]) for c in route.calls]
    assert sent[0] == sent[1]


async def test_llamacpp_keeps_a_uuid_request_id(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = respx_mock.post(URL).mock(return_value=ok())
    request_id = str(uuid.uuid4())
    request = CallRequest(messages=REQUEST.messages, request_id=request_id)
    await call(client, request, LlamaCppProvider, kind="llamacpp")
    assert route.calls[0].request.headers["x-request-id"] == request_id
