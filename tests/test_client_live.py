"""coe_client against a live gateway on loopback, with scripted upstreams behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from coe_client import CoE, CoEClient, CoEResult
from gateway.config import parse_settings
from tests.conftest import cascade_config
from tests.gateway_server import GatewayServer
from tests.upstream import UpstreamServer

REVIEW = "Review: a delight from start to finish."
QUESTION = "Which planet is largest? A) Mars B) Jupiter C) Venus D) Earth"


@pytest.fixture
def gateway(upstreams: dict[str, UpstreamServer], tmp_path: Path) -> Iterator[GatewayServer]:
    raw = cascade_config(upstreams, tmp_path / "ledger.db")
    raw["routes"]["mcq"] = {
        "task": "choice",
        "threshold": 0.66,
        "tiers": [["small-a", "small-b", "small-c"], ["large"]],
    }
    with GatewayServer(parse_settings(raw)) as server:
        yield server


@pytest.fixture
async def coe(gateway: GatewayServer) -> AsyncIterator[CoEClient]:
    async with CoEClient(gateway.base_url, route="sentiment", max_retries=0) as client:
        yield client


@pytest.mark.anyio
async def test_classify_returns_the_decision_and_every_call(coe: CoEClient) -> None:
    # Unanimity, so no call is cancelled by an early quorum and every number is fixed.
    result = await coe.classify(REVIEW, labels=["positive", "negative"], threshold=1)

    assert isinstance(result, CoEResult)
    assert result.label == "positive"
    assert (result.tier, result.decision) == (0, "agreed")
    assert result.agreement == pytest.approx(1.0)
    assert result.threshold == 1.0
    assert dict(result.votes) == {"positive": 3}
    assert sorted(c.endpoint for c in result.calls) == ["small-a", "small-b", "small-c"]
    assert {c.status for c in result.calls} == {"ok"}
    assert result.cost_usd == pytest.approx(sum(c.cost_usd for c in result.calls))
    assert result.cost_usd > 0
    assert result.usage.total_tokens == 36
    assert result.request_id


@pytest.mark.anyio
async def test_classify_sends_its_own_labels(
    coe: CoEClient, upstreams: dict[str, UpstreamServer]
) -> None:
    for server in upstreams.values():
        server.answer("mixed")

    result = await coe.classify(REVIEW, labels=["upbeat", "mixed", "gloomy"])

    assert result.label == "mixed"


@pytest.mark.anyio
async def test_choose_answers_with_a_letter(
    coe: CoEClient, upstreams: dict[str, UpstreamServer]
) -> None:
    for server in upstreams.values():
        server.answer("B")

    result = await coe.choose(QUESTION, route="mcq")

    assert (result.label, result.tier, result.decision) == ("B", 0, "agreed")


@pytest.mark.anyio
async def test_choose_sends_its_own_choices(
    coe: CoEClient, upstreams: dict[str, UpstreamServer]
) -> None:
    for server in upstreams.values():
        server.answer("E")

    result = await coe.choose(
        QUESTION + " E) Saturn", choices=["A", "B", "C", "D", "E"], route="mcq"
    )

    assert result.label == "E"


@pytest.mark.anyio
async def test_threshold_override_makes_the_cascade_escalate(
    coe: CoEClient, upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")
    upstreams["large"].answer("negative")

    result = await coe.classify(REVIEW, threshold=1.0)

    assert (result.tier, result.decision, result.label) == (1, "escalated", "negative")
    assert result.threshold == 1.0
    assert len(upstreams["large"].requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("threshold", ["2/3", Fraction(2, 3)])
async def test_fraction_thresholds_reach_the_gateway(
    gateway: GatewayServer, upstreams: dict[str, UpstreamServer], threshold: str | Fraction
) -> None:
    upstreams["small-c"].answer("negative")

    async with CoEClient(gateway.base_url, route="sentiment", max_retries=0) as coe:
        result = await coe.classify(REVIEW, threshold=threshold)

    assert result.tier == 0
    assert result.threshold == pytest.approx(0.6667, abs=1e-4)


@pytest.mark.anyio
async def test_max_tier_override_caps_the_climb(
    coe: CoEClient, upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")

    result = await coe.classify(REVIEW, threshold=1, max_tier=0)

    assert (result.tier, result.decision) == (0, "last_tier")
    assert upstreams["large"].requests == []


@pytest.mark.anyio
async def test_tags_reach_the_cost_report(coe: CoEClient) -> None:
    await coe.classify(REVIEW, tags=["team-a", "nightly"])
    await coe.classify(REVIEW, tags=["team-a"])

    report = await coe.costs(group_by="tag")

    requests = {group["key"]: group["requests"] for group in report["groups"]}
    assert requests == {"team-a": 2, "nightly": 1}


@pytest.mark.anyio
async def test_costs_returns_the_report_shape(coe: CoEClient) -> None:
    result = await coe.classify(REVIEW, threshold=1)

    report = await coe.costs(since="2000-01-01T00:00:00Z")

    assert {"tenant", "since", "until", "totals", "exits_by_tier", "counterfactual",
            "groups"} <= set(report)
    assert report["totals"]["requests"] == 1
    assert report["totals"]["calls"] == 3
    assert report["totals"]["cost_usd"] == pytest.approx(result.cost_usd)
    assert report["groups"][0]["key"] == "sentiment"


@pytest.mark.anyio
async def test_a_bad_override_is_openais_bad_request(coe: CoEClient) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await coe.classify(REVIEW, threshold="most of them")

    assert "x-coe-threshold" in str(raised.value)


@pytest.mark.anyio
async def test_an_unknown_route_is_openais_not_found(coe: CoEClient) -> None:
    with pytest.raises(openai.NotFoundError):
        await coe.classify(REVIEW, route="no-such-route")


@pytest.mark.anyio
async def test_a_server_that_is_not_a_gateway_is_a_validation_error(
    upstreams: dict[str, UpstreamServer],
) -> None:
    async with CoEClient(upstreams["small-a"].base_url, route="x", max_retries=0) as coe:
        with pytest.raises(openai.APIResponseValidationError, match="coe"):
            await coe.classify(REVIEW)


# --- the SDK's own calls, on the client itself, with strict response validation ------------


@pytest.fixture
async def strict(gateway: GatewayServer) -> AsyncIterator[CoEClient]:
    """Responses must match the SDK's types exactly, or the SDK raises."""
    async with CoEClient(gateway.base_url, route="sentiment", max_retries=0,
                         _strict_response_validation=True) as client:
        yield client


MESSAGES: list[Any] = [{"role": "user", "content": REVIEW}]


@pytest.mark.anyio
async def test_chat_completions_create_on_the_client(strict: CoEClient) -> None:
    completion = await strict.chat.completions.create(model="sentiment", messages=MESSAGES)

    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "positive"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert (completion.model_extra or {})["coe"]["route"] == "sentiment"


@pytest.mark.anyio
async def test_streaming_on_the_client(strict: CoEClient) -> None:
    stream = await strict.chat.completions.create(
        model="sentiment", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "positive"
    assert chunks[-1].usage is not None


@pytest.mark.anyio
async def test_models_list_on_the_client(strict: CoEClient) -> None:
    models = await strict.models.list()

    assert sorted(m.id for m in models.data) == ["mcq", "sentiment"]


@pytest.mark.anyio
async def test_raw_and_streamed_responses_on_the_client(strict: CoEClient) -> None:
    raw = await strict.chat.completions.with_raw_response.create(
        model="sentiment", messages=MESSAGES, extra_headers={"x-coe-threshold": "1"}
    )
    assert raw.headers["x-coe-tier"] == "0"
    assert raw.parse().choices[0].message.content == "positive"

    async with strict.chat.completions.with_streaming_response.create(
        model="sentiment", messages=MESSAGES
    ) as response:
        assert response.headers["x-coe-agreement"]
        assert (await response.parse()).choices[0].message.content == "positive"


@pytest.mark.anyio
async def test_with_options_and_copy_return_working_clients(strict: CoEClient) -> None:
    faster = strict.with_options(timeout=5.0)
    other = strict.copy(route="mcq")

    completion = await faster.chat.completions.create(model="sentiment", messages=MESSAGES)
    result = await faster.classify(REVIEW)

    assert isinstance(faster, CoEClient) and isinstance(other, CoEClient)
    assert completion.choices[0].message.content == "positive"
    assert (result.label, faster.route, other.route) == ("positive", "sentiment", "mcq")


@pytest.mark.anyio
async def test_the_helpers_pass_strict_validation(
    strict: CoEClient, upstreams: dict[str, UpstreamServer]
) -> None:
    result = await strict.classify(REVIEW, threshold=1)
    report = await strict.costs()

    assert (result.label, result.tier) == ("positive", 0)
    assert report["totals"]["requests"] == 1


@pytest.mark.anyio
async def test_sdk_errors_come_from_the_client(strict: CoEClient) -> None:
    with pytest.raises(openai.NotFoundError):
        await strict.chat.completions.create(model="no-such-route", messages=MESSAGES)


@pytest.mark.anyio
async def test_the_openai_attribute_is_kept_for_compatibility(coe: CoEClient) -> None:
    models = await coe.openai.models.list()

    assert coe.openai is coe
    assert sorted(m.id for m in models.data) == ["mcq", "sentiment"]


@pytest.mark.anyio
async def test_leaving_the_context_closes_the_client(gateway: GatewayServer) -> None:
    async with CoEClient(gateway.base_url) as coe:
        pass

    assert coe.is_closed()


def test_sync_client_is_the_sdks_too(gateway: GatewayServer) -> None:
    with CoE(gateway.base_url, route="sentiment", max_retries=0,
             _strict_response_validation=True) as coe:
        completion = coe.chat.completions.create(model="sentiment", messages=MESSAGES)
        models = coe.with_options(timeout=5.0).models.list()

    assert completion.choices[0].message.content == "positive"
    assert sorted(m.id for m in models.data) == ["mcq", "sentiment"]
    assert coe.is_closed()


def test_sync_wrapper_classifies_chooses_and_reports(
    gateway: GatewayServer, upstreams: dict[str, UpstreamServer]
) -> None:
    with CoE(gateway.base_url, route="sentiment", max_retries=0) as coe:
        label = coe.classify(REVIEW).label
        upstreams["small-c"].answer("negative")
        upstreams["large"].answer("negative")
        escalated = coe.classify(REVIEW, threshold="1", tags=["sync"])
        for server in upstreams.values():
            server.answer("C")
        choice = coe.choose(QUESTION, route="mcq")
        report = coe.costs(group_by="tier")

    assert label == "positive"
    assert (escalated.tier, escalated.label) == (1, "negative")
    assert choice.label == "C"
    assert report["totals"]["requests"] == 3
    assert report["exits_by_tier"] == {"0": 2, "1": 1}
