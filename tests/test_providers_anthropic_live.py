"""kind = "anthropic" end to end: the official openai SDK → the gateway under uvicorn → a loopback
server speaking Anthropic's Messages API; the bill in the ``coe`` object at Anthropic's prices."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.config import parse_settings
from tests.anthropic_upstream import Answer, AnthropicServer
from tests.gateway_server import GatewayServer

pytestmark = pytest.mark.anyio

KEY = "sk-ant-loopback"
SMALL = ("haiku-a", "haiku-b", "haiku-c")
# USD per million tokens: in, out.
PRICES = {"haiku": (1.0, 5.0), "opus": (5.0, 25.0)}
CACHED = {"input_tokens": 10, "output_tokens": 1,
          "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000}


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    with AnthropicServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def gateway(
    anthropic: AnthropicServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayServer]:
    monkeypatch.setenv("COE_TEST_ANTHROPIC_KEY", KEY)

    def claude(name: str, family: str, **extra: Any) -> dict[str, Any]:
        usd_in, usd_out = PRICES[family]
        return {"name": name, "kind": "anthropic", "base_url": anthropic.base_url,
                "model": f"claude-{name}", "api_key_env": "COE_TEST_ANTHROPIC_KEY",
                "timeout_s": 10, "max_retries": 0,
                "usd_per_mtok_in": usd_in, "usd_per_mtok_out": usd_out, **extra}

    raw = {
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "endpoints": [
            claude("haiku-a", "haiku", system_prompt="You rate film reviews."),
            claude("haiku-b", "haiku"),
            claude("haiku-c", "haiku"),
            claude("opus", "opus"),
        ],
        "routes": {"claude": {"labels": ["positive", "negative"], "threshold": 1,
                              "wait_for_all": True, "tiers": [list(SMALL), ["opus"]]}},
    }
    with GatewayServer(parse_settings(raw)) as server:
        yield server


@pytest.fixture
async def sdk(gateway: GatewayServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key="none", max_retries=0,
                                  _strict_response_validation=True) as client:
        yield client


def usd(family: str, uncached: int, out: int, write: int = 0, read: int = 0,
        write_1h: int = 0) -> float:
    usd_in, usd_out = PRICES[family]
    return (uncached * usd_in + write * 1.25 * usd_in + write_1h * 2.0 * usd_in
            + read * 0.1 * usd_in + out * usd_out) / 1e6


MESSAGES: list[Any] = [
    {"role": "system", "content": "Answer with one word."},
    {"role": "user", "content": "Review: a delight from start to finish."},
]


async def test_a_tier_of_anthropic_endpoints_answers_and_bills_cache_tokens(
    sdk: openai.AsyncOpenAI, anthropic: AnthropicServer
) -> None:
    for name in SMALL:
        anthropic.answer(f"claude-{name}", Answer("positive", usage=dict(CACHED)))

    raw = await sdk.chat.completions.with_raw_response.create(model="claude", messages=MESSAGES)
    completion = raw.parse()

    assert completion.choices[0].message.content == "positive"
    coe = (completion.model_extra or {})["coe"]
    assert (coe["tier"], coe["decision"], coe["votes"]) == (0, "agreed", {"positive": 3})
    per_call = usd("haiku", 10, 1, write=100, read=1000)
    assert [c["cost_usd"] for c in coe["calls"]] == pytest.approx([per_call] * 3)
    assert coe["cost_usd"] == pytest.approx(3 * per_call)
    assert float(raw.headers["x-coe-cost-usd"]) == pytest.approx(3 * per_call, rel=1e-3)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3 * 1110
    assert completion.usage.completion_tokens == 3

    # What reached Anthropic: its headers, max_tokens, and system text at the top level.
    assert len(anthropic.requests) == 3
    assert all(h["anthropic-version"] == "2023-06-01" for h in anthropic.request_headers)
    by_model = {body["model"]: body for body in anthropic.requests}
    assert by_model["claude-haiku-a"]["system"] == "You rate film reviews.\n\nAnswer with one word."
    assert by_model["claude-haiku-b"]["system"] == "Answer with one word."
    for body in anthropic.requests:
        assert body["max_tokens"] >= 1
        assert body["messages"] == [
            {"role": "user", "content": "Review: a delight from start to finish."}
        ]


async def test_disagreement_escalates_to_the_next_anthropic_tier(
    sdk: openai.AsyncOpenAI, anthropic: AnthropicServer
) -> None:
    for name in SMALL:
        anthropic.answer(f"claude-{name}", Answer("positive", usage=dict(CACHED)))
    anthropic.answer("claude-haiku-c", Answer("negative", usage=dict(CACHED)))
    one_hour = {"input_tokens": 20, "output_tokens": 1, "cache_creation_input_tokens": 50,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                   "ephemeral_1h_input_tokens": 50}}
    anthropic.answer("claude-opus", Answer("negative", usage=one_hour))

    completion = await sdk.chat.completions.create(model="claude", messages=MESSAGES)

    assert completion.choices[0].message.content == "negative"
    coe = (completion.model_extra or {})["coe"]
    assert (coe["tier"], coe["decision"]) == (1, "escalated")
    costs = {c["endpoint"]: c["cost_usd"] for c in coe["calls"]}
    assert costs["opus"] == pytest.approx(usd("opus", 20, 1, write_1h=50))
    expected = 3 * usd("haiku", 10, 1, write=100, read=1000) + usd("opus", 20, 1, write_1h=50)
    assert coe["cost_usd"] == pytest.approx(expected)


async def test_an_overloaded_endpoint_is_a_vote_for_nothing(
    sdk: openai.AsyncOpenAI, anthropic: AnthropicServer
) -> None:
    anthropic.answer("claude-haiku-b", Answer(status=529))
    anthropic.answer("claude-opus", Answer("positive"))

    completion = await sdk.chat.completions.create(model="claude", messages=MESSAGES)

    coe = (completion.model_extra or {})["coe"]
    statuses = {c["endpoint"]: c["status"] for c in coe["calls"]}
    assert statuses["haiku-b"] == "error"
    assert (coe["tier"], completion.choices[0].message.content) == (1, "positive")
