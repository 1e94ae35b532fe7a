"""``POST /v1/responses`` over real HTTP: the official SDK, strict response validation, scripted
loopback upstreams; the same cascade, billing and ledger as chat completions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.billing import Biller
from gateway.config import Settings
from tests.gateway_server import GatewayServer
from tests.test_security_tenants import ACME_KEY, ADMIN_KEY, auth, costs, tenants_config
from tests.upstream import UpstreamServer

REVIEW = "Review: a delight from start to finish. Sentiment?"
EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def gateway(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> Iterator[GatewayServer]:
    with GatewayServer(make_settings(threshold=1)) as server:
        yield server


@pytest.fixture
def client(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.base_url, api_key="unused", max_retries=0,
        _strict_response_validation=True,
    ) as sdk:
        yield sdk


def coe_of(response: Any) -> dict[str, Any]:
    extra = response.model_extra or {}
    return dict(extra["coe"])


def test_responses_create_answers_with_the_cascade_decision(
    client: openai.OpenAI, upstreams: dict[str, UpstreamServer]
) -> None:
    response = client.responses.create(
        model="sentiment", input=REVIEW, instructions="Answer positive or negative.",
        metadata={"ticket": "42"},
    )

    assert response.output_text == "positive"
    assert response.status == "completed"
    assert response.model == "sentiment"
    assert response.metadata == {"ticket": "42"}
    assert response.instructions == "Answer positive or negative."
    # Three tier-0 calls of 10 + 2 tokens each (tests/upstream.py).
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (30, 6)
    assert response.usage.total_tokens == 36
    coe = coe_of(response)
    assert coe["tier"] == 0 and coe["decision"] == "agreed"
    assert coe["votes"] == {"positive": 3}
    assert upstreams["large"].requests == []
    assert upstreams["small-a"].requests[0]["messages"] == [
        {"role": "system", "content": "Answer positive or negative."},
        {"role": "user", "content": REVIEW},
    ]


def test_responses_escalate_like_chat_completions(
    client: openai.OpenAI, upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")
    upstreams["large"].answer("negative")

    response = client.responses.create(model="sentiment", input=REVIEW)

    assert response.output_text == "negative"
    assert coe_of(response)["tier"] == 1
    assert coe_of(response)["decision"] == "escalated"


def test_responses_carry_the_decision_headers(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="sentiment", input=REVIEW)

    assert raw.headers["x-coe-tier"] == "0"
    assert raw.headers["x-coe-agreement"] == "1.0000"
    assert float(raw.headers["x-coe-cost-usd"]) == pytest.approx(coe_of(raw.parse())["cost_usd"])


def test_responses_input_messages_and_text_parts_become_chat_turns(
    client: openai.OpenAI, upstreams: dict[str, UpstreamServer]
) -> None:
    response = client.responses.create(
        model="sentiment",
        input=[
            {"role": "developer", "content": "One word."},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "Review: dull."}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "negative"}]},
            {"role": "user", "content": REVIEW},
        ],
    )

    assert response.output_text == "positive"
    assert upstreams["small-b"].requests[0]["messages"] == [
        {"role": "developer", "content": "One word."},
        {"role": "user", "content": [{"type": "text", "text": "Review: dull."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "negative"}]},
        {"role": "user", "content": REVIEW},
    ]


def test_responses_stream_sends_openais_event_sequence(client: openai.OpenAI) -> None:
    with client.responses.stream(model="sentiment", input=REVIEW) as stream:
        events = list(stream)
        final = stream.get_final_response()

    assert [event.type for event in events] == EVENTS
    assert [event.sequence_number for event in events] == list(range(len(EVENTS)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "positive"
    assert final.output_text == "positive"
    assert final.usage is not None and final.usage.total_tokens == 36
    assert coe_of(final)["tier"] == 0


def test_a_streamed_response_carries_the_decision_headers(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="sentiment", input=REVIEW, stream=True)
    events = [event.type for event in raw.parse()]

    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-coe-tier"] == "0"
    assert events == EVENTS


@pytest.mark.parametrize(
    ("param", "kwargs"),
    [
        ("tools", {"tools": [{"type": "function", "name": "f", "parameters": {}, "strict": True}]}),
        ("background", {"background": True}),
        ("previous_response_id", {"previous_response_id": "resp_123"}),
        ("conversation", {"conversation": "conv_123"}),
        ("tool_choice", {"tool_choice": "required"}),
    ],
)
def test_responses_refuse_what_a_cascade_cannot_serve(
    client: openai.OpenAI, upstreams: dict[str, UpstreamServer], param: str,
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="sentiment", input=REVIEW, **kwargs)

    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param
    assert "not supported on a cascade route" in body["message"]
    assert all(server.requests == [] for server in upstreams.values())


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": REVIEW}, "model"),
        ({"model": "sentiment"}, "input"),
        ({"model": "sentiment", "input": 3}, "input"),
        ({"model": "sentiment", "input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"model": "sentiment", "input": [{"type": "function_call_output", "role": "user",
                                           "content": "x"}]}, "input.0.type"),
        ({"model": "sentiment", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://x"}]}]}, "input.0.content.0.type"),
        ({"model": "sentiment", "input": "x", "temperature": "hot"}, "temperature"),
    ],
)
def test_a_malformed_responses_body_is_a_400_naming_the_param(
    gateway: GatewayServer, payload: dict[str, Any], param: str
) -> None:
    response = httpx.post(f"{gateway.base_url}/responses", json=payload)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_an_unknown_route_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-route", input=REVIEW)


def test_a_response_is_billed_recorded_and_budgeted_like_a_chat_completion(
    upstreams: dict[str, UpstreamServer], tmp_path: Any
) -> None:
    # θ = 1, three agreeing tier-0 calls: the cost of one request (tests/test_security_tenants).
    one_request = 3 * (10 * 0.1 + 2 * 0.2) / 1e6
    # A request starts only if spent + its worst case (reserved before dispatch) fits.
    route = tenants_config(upstreams, "sqlite:///unused.db").routes["sentiment"]
    worst = Biller(tenants_config(upstreams, "sqlite:///unused.db")).worst_case(
        route.tiers, len(REVIEW), route.max_tokens, route.deadline_s
    )
    settings = tenants_config(
        upstreams, f"sqlite:///{tmp_path / 'ledger.db'}", acme_budget=worst + one_request * 1.5
    )
    with GatewayServer(settings) as gateway, httpx.Client(base_url=gateway.url) as http:
        body = {"model": "sentiment", "input": REVIEW}
        first = http.post("/v1/responses", json=body, headers=auth(ACME_KEY))
        chat = http.post(
            "/v1/chat/completions", headers=auth(ACME_KEY),
            json={"model": "sentiment", "messages": [{"role": "user", "content": REVIEW}]},
        )
        over = http.post("/v1/responses", json=body, headers=auth(ACME_KEY))
        anonymous = http.post("/v1/responses", json=body)
        acme = costs(http, ACME_KEY)
        admin = costs(http, ADMIN_KEY)

    assert (first.status_code, chat.status_code) == (200, 200)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "insufficient_quota"
    assert anonymous.status_code == 401
    assert acme["totals"]["requests"] == 2
    assert acme["totals"]["cost_usd"] == pytest.approx(2 * one_request)
    assert admin["totals"]["requests"] == 2
