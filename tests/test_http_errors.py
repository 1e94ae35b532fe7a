"""Every bad input gets OpenAI's error shape and the right status; none gets a 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.gateway_server import GatewayServer
from tests.upstream import UpstreamServer

GOOD = {"model": "sentiment", "messages": [{"role": "user", "content": "Great film."}]}


@pytest.fixture
def gateway(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> Iterator[httpx.Client]:
    with GatewayServer(make_settings()) as server, httpx.Client(base_url=server.url) as client:
        yield client


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


def post(client: httpx.Client, body: Any = None, **kwargs: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json=body, **kwargs)


def test_malformed_json_is_400(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/v1/chat/completions", content=b'{"model": "sentiment",',
        headers={"content-type": "application/json"},
    )

    assert_openai_error(response, 400)


def test_non_utf8_body_is_400(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/chat/completions", content=b"\xff\xfe{}")

    assert_openai_error(response, 400)


def test_body_that_is_not_an_object_is_400(gateway: httpx.Client) -> None:
    assert_openai_error(post(gateway, ["model", "sentiment"]), 400)


def test_missing_messages_is_400_naming_the_field(gateway: httpx.Client) -> None:
    error = assert_openai_error(post(gateway, {"model": "sentiment"}), 400)

    assert error["param"] == "messages"


def test_wrong_message_type_is_400(gateway: httpx.Client) -> None:
    body = {"model": "sentiment", "messages": [{"role": "user", "content": 42}]}

    assert_openai_error(post(gateway, body), 400)


def test_unknown_route_is_404(gateway: httpx.Client) -> None:
    error = assert_openai_error(post(gateway, {**GOOD, "model": "gpt-17"}), 404)

    assert error["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-coe-threshold", "two thirds"),
        ("x-coe-threshold", "1.5"),
        ("x-coe-threshold", "0"),
        ("x-coe-threshold", "1/0"),
        ("x-coe-policy", "majority"),
        ("x-coe-max-tier", "-1"),
        ("x-coe-max-tier", "first"),
    ],
)
def test_bad_override_header_is_400(gateway: httpx.Client, header: str, value: str) -> None:
    error = assert_openai_error(post(gateway, GOOD, headers={header: value}), 400)

    assert error["param"] == header


def test_more_than_one_choice_is_refused(gateway: httpx.Client) -> None:
    error = assert_openai_error(post(gateway, {**GOOD, "n": 2}), 400)

    assert error["param"] == "n"


def test_tools_are_refused_on_a_cascade_route(gateway: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]

    error = assert_openai_error(post(gateway, {**GOOD, "tools": tools}), 400)

    assert error["param"] == "tools"


@pytest.mark.parametrize(
    "coe",
    [
        {"threshold": 2},
        {"threshold": "most"},
        {"policy": "loudest"},
        {"max_tier": -1},
        {"task": "poem"},
        {"labels": []},
        {"cost_usd": 0},
    ],
)
def test_bad_coe_extension_is_400(gateway: httpx.Client, coe: dict[str, Any]) -> None:
    assert_openai_error(post(gateway, {**GOOD, "coe": coe}), 400)


def test_oversized_body_is_413(gateway: httpx.Client) -> None:
    huge = {**GOOD, "messages": [{"role": "user", "content": "x" * 2_000_000}]}

    error = assert_openai_error(post(gateway, huge), 413)

    assert error["code"] == "request_too_large"


def test_unknown_path_is_404_in_openai_shape(gateway: httpx.Client) -> None:
    assert_openai_error(gateway.get("/v1/nothing-here"), 404)


def test_wrong_method_is_405_in_openai_shape(gateway: httpx.Client) -> None:
    assert_openai_error(gateway.get("/v1/chat/completions"), 405)
