"""The chat request's documented fields are typed as OpenAI's API types them, over real HTTP.

A wrongly typed or out-of-range field is a 400 in OpenAI's shape naming the param, whether the
gateway uses the field or not; a field OpenAI's spec does not name is tolerated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.config import parse_settings
from tests.conftest import cascade_config
from tests.gateway_server import GatewayServer
from tests.upstream import UpstreamServer

GOOD: dict[str, Any] = {
    "model": "sentiment", "messages": [{"role": "user", "content": "Great film."}]
}


@pytest.fixture(scope="module")
def gateway(
    upstream_pool: dict[str, UpstreamServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    ledger = tmp_path_factory.mktemp("types") / "ledger.db"
    with GatewayServer(parse_settings(cascade_config(upstream_pool, ledger))) as server:
        yield server


@pytest.fixture
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture
def sdk(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_upstreams(upstreams: dict[str, UpstreamServer]) -> None:
    """Every upstream answers "positive"."""


def post(client: httpx.Client, **fields: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={**GOOD, **fields})


def openai_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error = dict(response.json()["error"])
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


def test_a_string_temperature_is_400_naming_temperature(http: httpx.Client) -> None:
    error = openai_error(post(http, temperature="hot"))

    assert error["param"] == "temperature"
    assert error["code"] == "invalid_type"
    assert "temperature" in error["message"]


def test_a_string_max_tokens_is_400_naming_max_tokens(http: httpx.Client) -> None:
    error = openai_error(post(http, max_tokens="ten"))

    assert (error["param"], error["code"]) == ("max_tokens", "invalid_type")


def test_a_numeric_string_is_not_a_number(http: httpx.Client) -> None:
    assert openai_error(post(http, max_tokens="10"))["param"] == "max_tokens"


def test_a_boolean_is_not_an_integer(http: httpx.Client) -> None:
    assert openai_error(post(http, seed=True))["param"] == "seed"


def test_an_unknown_field_is_tolerated(http: httpx.Client) -> None:
    response = post(http, foo=1)

    assert response.status_code == 200, response.text


def test_the_official_sdk_sees_the_param_of_a_wrong_type(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="sentiment", messages=GOOD["messages"], temperature="hot"  # type: ignore[arg-type]
        )

    assert raised.value.param == "temperature"
    assert raised.value.code == "invalid_type"


def test_every_documented_field_typed_right_is_accepted(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="sentiment",
        messages=[
            {"role": "developer", "content": "Answer with one label."},
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "A dull film.", "name": "reviewer"},
            {"role": "assistant", "content": "negative"},
            {"role": "user", "content": [
                {"type": "text", "text": "Great film."},
                {"type": "image_url", "image_url": {"url": "https://x.test/a", "detail": "low"}},
            ]},
        ],
        temperature=0.2, top_p=0.9, n=1, max_tokens=5, max_completion_tokens=5, stop=["\n"],
        presence_penalty=-1.5, frequency_penalty=1, logit_bias={"50256": -100}, logprobs=True,
        top_logprobs=2, seed=7, user="u-1", safety_identifier="s-1", prompt_cache_key="k",
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
        modalities=["text"], prediction={"type": "content", "content": "positive"},
        tool_choice="none", parallel_tool_calls=False, metadata={"team": "ml"}, store=False,
        service_tier="auto", reasoning_effort="low", verbosity="low",
        web_search_options={"search_context_size": "low"},
        stream_options=None, stream=False,
    )

    # A schema naming no property is served as json_object is (docs/api.md, "Structured outputs").
    assert completion.choices[0].message.content == '{"label":"positive"}'


def test_null_means_not_given(http: httpx.Client) -> None:
    response = post(http, temperature=None, stop=None, stream=None, metadata=None, user=None)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("top_p", "high", "top_p"),
        ("n", 1.5, "n"),
        ("max_completion_tokens", "5", "max_completion_tokens"),
        ("stop", 5, "stop"),
        ("stop", ["\n", 5], "stop.1"),
        ("stream", "yes", "stream"),
        ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
        ("presence_penalty", "0", "presence_penalty"),
        ("frequency_penalty", [], "frequency_penalty"),
        ("logit_bias", {"50256": "ban"}, "logit_bias.50256"),
        ("logit_bias", [1], "logit_bias"),
        ("logprobs", "true", "logprobs"),
        ("top_logprobs", 2.5, "top_logprobs"),
        ("user", 42, "user"),
        ("seed", "7", "seed"),
        ("response_format", "json", "response_format"),
        ("response_format", {"type": "json_schema"}, "response_format.json_schema"),
        ("tools", {"type": "function"}, "tools"),
        ("tool_choice", 1, "tool_choice"),
        ("parallel_tool_calls", "no", "parallel_tool_calls"),
        ("metadata", {"team": 1}, "metadata.team"),
        ("store", 0, "store"),
        ("service_tier", 1, "service_tier"),
        ("modalities", "text", "modalities"),
        ("reasoning_effort", True, "reasoning_effort"),
        ("prediction", {"type": "content", "content": 5}, "prediction.content"),
        ("audio", {"voice": 5, "format": "wav"}, "audio.voice"),
        ("web_search_options", {"search_context_size": 3},
         "web_search_options.search_context_size"),
    ],
)
def test_a_wrongly_typed_field_is_400_naming_it(
    http: httpx.Client, field: str, value: Any, param: str
) -> None:
    error = openai_error(post(http, **{field: value}))

    assert error["param"] == param


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_p", 1.1),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("top_logprobs", 21),
        ("logit_bias", {"50256": 101}),
        ("n", 0),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("metadata", {f"k{i}": "v" for i in range(17)}),
        ("safety_identifier", "s" * 65),
    ],
)
def test_a_value_outside_openais_documented_range_is_400(
    http: httpx.Client, field: str, value: Any
) -> None:
    error = openai_error(post(http, **{field: value}))

    assert error["param"].split(".")[0] == field


def test_the_range_error_says_the_bound(http: httpx.Client) -> None:
    error = openai_error(post(http, temperature=3))

    assert error["code"] == "decimal_above_max_value"
    assert "<= 2" in error["message"]


@pytest.mark.parametrize(
    ("message", "param", "code"),
    [
        ({"role": "user"}, "messages.0.content", "missing_required_parameter"),
        ({"content": "x"}, "messages.0.role", "missing_required_parameter"),
        ({"role": "robot", "content": "x"}, "messages.0.role", "invalid_value"),
        ({"role": "user", "content": None}, "messages.0.content", "invalid_type"),
        ({"role": "user", "content": []}, "messages.0.content", "empty_array"),
        ({"role": "user", "content": [{"type": "video"}]}, "messages.0.content.0.type",
         "invalid_value"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": 1}}]},
         "messages.0.content.0.image_url.url", "invalid_type"),
        ({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
         "messages.0.content.0.type", "invalid_value"),
        ({"role": "assistant", "content": "x", "tool_calls": "none"},
         "messages.0.tool_calls", "invalid_type"),
        ({"role": "tool", "content": "42"}, "messages.0.tool_call_id",
         "missing_required_parameter"),
        ({"role": "user", "content": "x", "name": 7}, "messages.0.name", "invalid_type"),
    ],
)
def test_a_message_of_the_wrong_shape_for_its_role_is_400(
    http: httpx.Client, message: dict[str, Any], param: str, code: str
) -> None:
    error = openai_error(post(http, messages=[message]))

    assert (error["param"], error["code"]) == (param, code)


def test_an_unknown_key_on_a_message_is_tolerated(http: httpx.Client) -> None:
    response = post(http, messages=[{"role": "user", "content": "Great film.", "x-note": 1}])

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "auto"),
        ("functions", [{"name": "f"}]),
        ("function_call", {"name": "f"}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
    ],
)
def test_a_well_typed_field_a_cascade_cannot_honour_is_still_refused(
    http: httpx.Client, field: str, value: Any
) -> None:
    error = openai_error(post(http, **{field: value}))

    assert error["param"] == field
    assert error["code"] in {"unsupported_parameter", "unsupported_value"}
