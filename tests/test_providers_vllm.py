"""The vLLM dialect's choice field, chosen by the server's version (GET /version), against respx."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from providers import CallRequest, RetryPolicy, VLLMProvider, make_http_client
from providers.endpoint import EndpointConfig
from providers.vllm import choice_field, parse_version, server_root

pytestmark = pytest.mark.anyio

CHAT = "http://vllm.test/v1/chat/completions"
VERSION = "http://vllm.test/version"
FAST = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.002, max_retry_after_s=0.01)
CLASSIFY = CallRequest(
    messages=({"role": "user", "content": "Great film!"},), answer_set=("positive", "negative")
)
V0_32 = httpx.Response(200, json={"version": "0.32.0"})
OPEN = CallRequest(messages=({"role": "user", "content": "Great film!"},))


def completion() -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }


def provider(client: httpx.AsyncClient, **overrides: Any) -> VLLMProvider:
    config: dict[str, Any] = {
        "name": "small-a",
        "kind": "vllm",
        "base_url": "http://vllm.test/v1",
        "model": "m",
        "max_retries": 0,
        **overrides,
    }
    return VLLMProvider(EndpointConfig(**config), client, retry_policy=FAST)


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as shared:
        yield shared


# --- the pure rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.32.0", (0, 32)), ("0.11.2.dev3+gabc", (0, 11)), ("v1.0", (1, 0)), ("nightly", None)],
)
def test_parse_version(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("configured", "version", "field", "warns"),
    [
        ("auto", (0, 32), "structured_outputs", False),
        ("auto", (0, 12), "structured_outputs", False),
        ("auto", (0, 11), "guided_choice", False),
        ("structured_outputs", (0, 32), "structured_outputs", False),
        ("guided_choice", (0, 8), "guided_choice", False),
        # A forced field the server's version ignores is corrected, and says why.
        ("guided_choice", (0, 32), "structured_outputs", True),
        ("structured_outputs", (0, 10), "guided_choice", True),
        # Unknown version: a forced field is kept; auto falls back to the current name, saying so.
        ("guided_choice", None, "guided_choice", False),
        ("structured_outputs", None, "structured_outputs", False),
        ("auto", None, "structured_outputs", True),
    ],
)
def test_choice_field_by_version(
    configured: str, version: tuple[int, int] | None, field: str, warns: bool
) -> None:
    chosen, why = choice_field(configured, version)
    assert chosen == field
    assert (why is not None) == warns


def test_server_root_strips_the_v1_suffix() -> None:
    assert server_root("http://h:8000/v1") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert server_root("http://h/vllm") == "http://h/vllm"


def test_auto_is_the_default() -> None:
    assert EndpointConfig(name="a", kind="vllm", base_url="http://h/v1").vllm_choice_field == "auto"


# --- against a mocked server --------------------------------------------------------------------


async def test_auto_asks_the_version_once_and_sends_structured_outputs(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    version = respx_mock.get(VERSION).mock(return_value=V0_32)
    chat = respx_mock.post(CHAT).mock(return_value=httpx.Response(200, json=completion()))
    vllm = provider(client)
    for _ in range(3):
        assert (await vllm.complete(CLASSIFY)).status == "ok"
    assert version.call_count == 1
    assert vllm.server_version == "0.32.0"
    assert sent(chat)["structured_outputs"] == {"choice": ["positive", "negative"]}
    assert "guided_choice" not in sent(chat)


async def test_auto_sends_guided_choice_to_a_server_before_0_12(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.get(VERSION).mock(return_value=httpx.Response(200, json={"version": "0.11.2"}))
    chat = respx_mock.post(CHAT).mock(return_value=httpx.Response(200, json=completion()))
    await provider(client).complete(CLASSIFY)
    assert sent(chat)["guided_choice"] == ["positive", "negative"]
    assert "structured_outputs" not in sent(chat)


async def test_forced_guided_choice_on_a_new_server_is_corrected_with_one_warning(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.get(VERSION).mock(return_value=httpx.Response(200, json={"version": "0.32.0"}))
    chat = respx_mock.post(CHAT).mock(return_value=httpx.Response(200, json=completion()))
    vllm = provider(client, vllm_choice_field="guided_choice")
    with caplog.at_level(logging.WARNING, logger="providers.vllm"):
        await vllm.complete(CLASSIFY)
        await vllm.complete(CLASSIFY)
    assert sent(chat)["structured_outputs"] == {"choice": ["positive", "negative"]}
    assert "guided_choice" not in sent(chat)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "0.32" in warnings[0].getMessage()
    assert "guided_choice" in warnings[0].getMessage()
    assert "small-a" in warnings[0].getMessage()


async def test_an_unreadable_version_keeps_a_forced_field_and_is_asked_again_later(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    version = respx_mock.get(VERSION).mock(return_value=httpx.Response(404))
    chat = respx_mock.post(CHAT).mock(return_value=httpx.Response(200, json=completion()))
    vllm = provider(client, vllm_choice_field="guided_choice")
    with caplog.at_level(logging.WARNING, logger="providers.vllm"):
        await vllm.complete(CLASSIFY)
        await vllm.complete(CLASSIFY)
    assert sent(chat)["guided_choice"] == ["positive", "negative"]
    # Not asked on every call: at most once per VERSION_RETRY_S.
    assert version.call_count == 1
    assert vllm.server_version is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_auto_without_a_version_falls_back_to_structured_outputs(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    respx_mock.get(VERSION).mock(side_effect=httpx.ConnectError("refused"))
    chat = respx_mock.post(CHAT).mock(return_value=httpx.Response(200, json=completion()))
    record = await provider(client).complete(CLASSIFY)
    assert record.status == "ok"
    assert sent(chat)["structured_outputs"] == {"choice": ["positive", "negative"]}


async def test_an_unconstrained_call_does_not_ask_the_version(
    respx_mock: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    version = respx_mock.get(VERSION).mock(return_value=V0_32)
    respx_mock.post(CHAT).mock(return_value=httpx.Response(200, json=completion()))
    await provider(client).complete(OPEN)
    assert version.call_count == 0
