"""The cascade over real HTTP: four scripted upstreams on loopback, the official openai SDK."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.config import Settings
from tests.gateway_server import GatewayServer
from tests.upstream import Gate, Reply, UpstreamServer

REVIEW = [{"role": "user", "content": "Review: a delight from start to finish. Sentiment?"}]


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(**route: Any) -> GatewayServer:
        server = GatewayServer(make_settings(**route)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def client_for(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def ask(gateway: GatewayServer, **kwargs: Any) -> dict[str, Any]:
    with client_for(gateway) as client:
        response = client.chat.completions.create(
            model="sentiment", messages=REVIEW, **kwargs  # type: ignore[arg-type]
        )
    return response.model_dump()


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {call["endpoint"]: call["status"] for call in body["coe"]["calls"]}


def test_unanimous_tier_zero_answers_without_the_large_model(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    body = ask(serve(threshold=1))

    assert body["choices"][0]["message"]["content"] == "positive"
    assert body["coe"]["tier"] == 0
    assert body["coe"]["decision"] == "agreed"
    assert body["coe"]["votes"] == {"positive": 3}
    assert upstreams["large"].requests == []


def test_two_of_three_exits_at_two_thirds(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")

    body = ask(serve(threshold="2/3"))

    assert body["choices"][0]["message"]["content"] == "positive"
    assert body["coe"]["tier"] == 0
    assert body["coe"]["agreement"] == pytest.approx(0.667, abs=0.001)


def test_two_of_three_escalates_at_unanimity(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")
    upstreams["large"].answer("negative")

    body = ask(serve(threshold=1))

    assert body["choices"][0]["message"]["content"] == "negative"
    assert body["coe"]["tier"] == 1
    assert body["coe"]["decision"] == "escalated"
    assert len(upstreams["large"].requests) == 1


def test_threshold_header_overrides_the_route(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")
    upstreams["large"].answer("negative")

    body = ask(serve(threshold=0.66), extra_headers={"x-coe-threshold": "1"})

    assert body["coe"]["tier"] == 1
    assert body["coe"]["threshold"] == 1.0


def test_body_extension_sets_the_threshold(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")

    body = ask(serve(threshold=0.66), extra_body={"coe": {"threshold": 1}})

    assert body["coe"]["tier"] == 1


def test_header_wins_over_body_extension(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")

    body = ask(
        serve(threshold=1),
        extra_body={"coe": {"threshold": 1}},
        extra_headers={"x-coe-threshold": "2/3"},
    )

    assert body["coe"]["tier"] == 0


def test_a_failed_call_counts_against_agreement(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-a"].answer(None, status=500)
    upstreams["small-c"].answer("negative")

    body = ask(serve(threshold="2/3"))

    assert body["coe"]["tier"] == 1
    assert statuses(body)["small-a"] == "error"


def test_a_garbage_answer_counts_against_agreement(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-b"].answer("I'm sorry, I can't help with that request.")
    upstreams["large"].answer("negative")

    body = ask(serve(threshold=1))

    assert body["coe"]["tier"] == 1
    assert statuses(body)["small-b"] == "unparsable"
    assert body["choices"][0]["message"]["content"] == "negative"


def test_all_of_tier_zero_failing_escalates(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    for name in ("small-a", "small-b", "small-c"):
        upstreams[name].answer(None, status=503)
    upstreams["large"].answer("negative")

    body = ask(serve())

    assert body["choices"][0]["message"]["content"] == "negative"
    assert body["coe"]["tier"] == 1


def test_last_tier_failing_is_a_502_with_a_clear_message(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    for name in upstreams:
        upstreams[name].answer(None, status=500)

    with pytest.raises(openai.APIStatusError) as raised:
        ask(serve())

    assert raised.value.status_code == 502
    error = raised.value.body
    assert isinstance(error, dict)
    assert "large" in error["message"]
    assert error["code"] == "upstream_failed"


def test_early_quorum_cancels_the_held_call(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    held = Gate()
    upstreams["small-c"].script(Reply(content="negative", gate=held))

    body = ask(serve(threshold="2/3"))

    assert held.entered.is_set()
    assert body["choices"][0]["message"]["content"] == "positive"
    assert statuses(body) == {"small-a": "ok", "small-b": "ok", "small-c": "cancelled"}


def test_early_escalation_does_not_wait_for_the_held_call(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    held = Gate()
    upstreams["small-b"].answer("negative")
    upstreams["small-c"].script(Reply(content="positive", gate=held))
    upstreams["large"].answer("negative")

    body = ask(serve(threshold=1))

    assert held.entered.is_set()
    assert body["coe"]["tier"] == 1
    assert statuses(body)["small-c"] == "cancelled"


def test_wait_for_all_waits_for_the_held_call(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    held = Gate()
    upstreams["small-c"].script(Reply(content="negative", gate=held))
    opener = threading.Thread(target=lambda: (held.entered.wait(10), held.open()))
    opener.start()

    body = ask(serve(threshold="2/3", wait_for_all=True))
    opener.join()

    assert statuses(body) == {"small-a": "ok", "small-b": "ok", "small-c": "ok"}
    assert body["coe"]["votes"] == {"positive": 2, "negative": 1}


def test_max_tier_header_caps_the_climb(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")

    body = ask(serve(threshold=1), extra_headers={"x-coe-max-tier": "0"})

    assert body["coe"]["tier"] == 0
    assert body["coe"]["decision"] == "last_tier"
    assert body["choices"][0]["message"]["content"] == "positive"
    assert upstreams["large"].requests == []


def test_deadline_gives_504(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    gates = [Gate() for _ in range(3)]
    for gate, name in zip(gates, ("small-a", "small-b", "small-c"), strict=True):
        upstreams[name].script(Reply(gate=gate))

    with pytest.raises(openai.APIStatusError) as raised:
        ask(serve(deadline_s=0.3))

    assert raised.value.status_code == 504


def test_usage_sums_every_call_and_headers_carry_the_decision(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    with client_for(serve(threshold=1)) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="sentiment", messages=REVIEW  # type: ignore[arg-type]
        )
        body = raw.parse().model_dump()

    usage = body["usage"]
    assert usage["prompt_tokens"] == 30
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == 36
    assert raw.headers["x-coe-tier"] == "0"
    assert float(raw.headers["x-coe-agreement"]) == pytest.approx(1.0)
    assert float(raw.headers["x-coe-cost-usd"]) == pytest.approx(body["coe"]["cost_usd"])
    assert raw.headers["x-request-id"]


def test_request_id_is_forwarded_to_upstreams(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    ask(serve(), extra_headers={"x-request-id": "trace-123"})

    assert upstreams["small-a"].request_headers[0]["x-request-id"] == "trace-123"


@pytest.mark.anyio
async def test_async_client_gets_the_same_answer(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    gateway = serve()
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused") as client:
        response = await client.chat.completions.create(
            model="sentiment", messages=REVIEW  # type: ignore[arg-type]
        )

    assert response.choices[0].message.content == "positive"


def test_streaming_sends_the_answer_then_usage_and_coe(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    with client_for(serve(threshold=1)) as client:
        stream = client.chat.completions.create(
            model="sentiment",
            messages=REVIEW,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk.model_dump() for chunk in stream]

    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text == "positive"
    assert chunks[-1]["usage"]["total_tokens"] == 36
    assert chunks[-1]["coe"]["decision"] == "agreed"


def test_models_lists_the_routes(serve: Callable[..., GatewayServer]) -> None:
    with client_for(serve()) as client:
        models = client.models.list()

    assert [m.id for m in models.data] == ["sentiment"]


def test_healthz(serve: Callable[..., GatewayServer]) -> None:
    response = httpx.get(f"{serve().url}/healthz")

    assert response.status_code == 200



def test_metrics_count_requests_and_calls(serve: Callable[..., GatewayServer]) -> None:
    gateway = serve(threshold=1)
    ask(gateway)

    text = httpx.get(f"{gateway.url}/metrics").text

    assert 'route="sentiment"' in text
    assert 'endpoint="small-a"' in text


def test_upstream_auth_failure_body_is_not_shown_to_clients(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    leaky = b'{"error": {"message": "Incorrect API key provided: sk-proj-****abcd"}}'
    for server in upstreams.values():
        server.answer(None, status=401, raw_body=leaky)

    with pytest.raises(openai.APIStatusError) as raised:
        ask(serve())

    assert raised.value.status_code == 502
    assert "sk-proj" not in str(raised.value.body)
    assert "HTTP 401" in str(raised.value.body)
