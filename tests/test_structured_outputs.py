"""Structured outputs on a cascade route: ``json_object`` and a one-enum-field ``json_schema``
(chat's ``response_format``, the Responses API's ``text.format``) derive the label set, vote on the
parsed field and answer a JSON document that validates against the client's schema."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest

from gateway.config import Settings
from gateway.plan import CoEOverrides, OutputFormat, make_plan
from policies.answers import AnswerSpec, normalise
from providers import CallRequest, LlamaCppProvider, OpenAIProvider, VLLMProvider
from providers.endpoint import EndpointConfig
from tests.gateway_server import GatewayServer
from tests.upstream import UpstreamServer

REVIEW = [{"role": "user", "content": "Review: a delight from start to finish. Sentiment?"}]
VERDICT = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}
VERDICT_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True},
}


@pytest.fixture
def serve(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> Iterator[Callable[..., openai.OpenAI]]:
    opened: list[tuple[GatewayServer, openai.OpenAI]] = []

    def start(**route: Any) -> openai.OpenAI:
        server = GatewayServer(make_settings(**route)).__enter__()
        client = openai.OpenAI(
            base_url=server.base_url, api_key="unused", max_retries=0,
            _strict_response_validation=True,
        )
        opened.append((server, client))
        return client

    yield start
    for server, client in opened:
        client.close()
        server.__exit__(None, None, None)


def ask(client: openai.OpenAI, response_format: Any, **kwargs: Any) -> str:
    completion = client.chat.completions.create(
        model="sentiment", messages=REVIEW, response_format=response_format, **kwargs
    )
    content = completion.choices[0].message.content
    assert content is not None
    return content


def test_json_object_answers_the_decided_label_under_label(
    serve: Callable[..., openai.OpenAI],
) -> None:
    content = ask(serve(threshold=1), {"type": "json_object"})

    assert json.loads(content) == {"label": "positive"}


@pytest.mark.parametrize("schema", [{}, {"type": "object"}])
def test_a_schema_naming_no_property_is_served_as_json_object(
    serve: Callable[..., openai.OpenAI], schema: dict[str, Any]
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "any", "schema": schema}}

    content = ask(serve(threshold=1), fmt)

    assert json.loads(content) == {"label": "positive"}
    jsonschema_rs.validate(schema, json.loads(content))


def test_a_json_schema_enum_answer_validates_against_the_clients_schema(
    serve: Callable[..., openai.OpenAI], upstreams: dict[str, UpstreamServer]
) -> None:
    # Hosted models answer in the schema, with a word of their own beside the answer field.
    for name in ("small-a", "small-b", "large"):
        upstreams[name].answer('{"verdict": "negative"}')
    upstreams["small-c"].answer('{"verdict": "negative", "why": "it is dull"}')

    content = ask(serve(threshold=1), VERDICT_FORMAT)

    jsonschema_rs.validate(VERDICT, json.loads(content))
    assert json.loads(content) == {"verdict": "negative"}


def test_hosted_upstreams_are_sent_the_clients_json_schema(
    serve: Callable[..., openai.OpenAI], upstreams: dict[str, UpstreamServer]
) -> None:
    ask(serve(threshold=1), VERDICT_FORMAT)

    sent = [body.get("response_format") for body in upstreams["small-a"].requests]
    assert sent == [VERDICT_FORMAT]


def test_a_streamed_json_schema_answer_is_the_json_document(
    serve: Callable[..., openai.OpenAI],
) -> None:
    client = serve(threshold=1)
    stream = client.chat.completions.create(
        model="sentiment", messages=REVIEW, response_format=VERDICT_FORMAT,  # type: ignore[arg-type]
        stream=True,
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert json.loads(content) == {"verdict": "positive"}


def test_the_schemas_enum_is_the_label_set_of_a_route_without_labels(
    serve: Callable[..., openai.OpenAI], upstreams: dict[str, UpstreamServer]
) -> None:
    for server in upstreams.values():
        server.answer("neutral")
    schema = {"type": "object", "properties": {"tone": {"enum": ["upbeat", "neutral", "grim"]}}}

    content = ask(
        serve(task="text", threshold=1),
        {"type": "json_schema", "json_schema": {"name": "tone", "schema": schema}},
    )

    assert json.loads(content) == {"tone": "neutral"}
    jsonschema_rs.validate(schema, json.loads(content))


def test_the_same_set_in_another_order_agrees_with_the_route(
    serve: Callable[..., openai.OpenAI],
) -> None:
    schema = {"type": "object", "properties": {"s": {"enum": ["positive", "negative"]}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}

    assert json.loads(ask(serve(threshold=1), fmt)) == {"s": "positive"}


@pytest.mark.parametrize(
    ("extra", "source"),
    [({}, "the labels of route 'sentiment' ['positive', 'negative']"),
     ({"coe": {"labels": ["good", "bad"]}}, "coe.labels ['good', 'bad']")],
)
def test_a_schema_and_route_label_set_that_differ_is_a_400_naming_both(
    serve: Callable[..., openai.OpenAI], upstreams: dict[str, UpstreamServer],
    extra: dict[str, Any], source: str,
) -> None:
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "yn", "schema": schema}}

    with pytest.raises(openai.BadRequestError) as caught:
        ask(serve(), fmt, extra_body=extra)

    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "response_format.json_schema"
    assert "['yes', 'no']" in body["message"] and source in body["message"]
    assert all(server.requests == [] for server in upstreams.values())


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        ({"type": "object", "properties": {"a": {"enum": ["x"]}, "b": {"type": "string"}}},
         "response_format.json_schema.schema"),
        ({"type": "array", "items": {"type": "string"}}, "response_format.json_schema.schema"),
        ({"type": "object", "properties": {"n": {"type": "integer"}}},
         "response_format.json_schema.schema.properties.n"),
        ({"type": "object", "properties": {"n": {"enum": [1, 2]}}},
         "response_format.json_schema.schema.properties.n.enum"),
    ],
)
def test_a_schema_a_cascade_cannot_vote_on_is_a_400(
    serve: Callable[..., openai.OpenAI], schema: dict[str, Any], param: str
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    with pytest.raises(openai.BadRequestError) as caught:
        ask(serve(), fmt)

    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param


def test_responses_text_format_json_schema_answers_in_the_schema(
    serve: Callable[..., openai.OpenAI],
) -> None:
    client = serve(threshold=1)
    response = client.responses.create(
        model="sentiment",
        input="Review: a delight. Sentiment?",
        text={"format": {"type": "json_schema", "name": "verdict", "schema": VERDICT,
                         "strict": True}},
    )

    jsonschema_rs.validate(VERDICT, json.loads(response.output_text))
    assert json.loads(response.output_text) == {"verdict": "positive"}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_responses_text_format_labels_that_differ_are_a_400(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> None:
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}}
    with GatewayServer(make_settings()) as gateway:
        response = httpx.post(f"{gateway.base_url}/responses", json={
            "model": "sentiment", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "yn", "schema": schema}},
        })

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "text.format"
    assert "['yes', 'no']" in response.json()["error"]["message"]


def test_without_a_response_format_the_answer_is_the_label(
    serve: Callable[..., openai.OpenAI], upstreams: dict[str, UpstreamServer]
) -> None:
    client = serve(threshold=1)
    completion = client.chat.completions.create(model="sentiment", messages=REVIEW)  # type: ignore[arg-type]

    assert completion.choices[0].message.content == "positive"
    assert "response_format" not in upstreams["small-a"].requests[0]


# -- The plan, the answer reader and the upstream bodies --


def test_the_plan_takes_the_schemas_labels_field_and_format(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(task="text")
    output = OutputFormat(
        labels=("upbeat", "grim"), param="text.format", field="tone",
        response_format=VERDICT_FORMAT,
    )

    plan = make_plan("sentiment", settings.routes["sentiment"], CoEOverrides(), {}, output)

    assert (plan.spec.task, plan.spec.labels, plan.spec.json_field) == (
        "classify", ("upbeat", "grim"), "tone"
    )
    assert plan.response_format == VERDICT_FORMAT


def test_the_answer_field_is_read_first() -> None:
    spec = AnswerSpec(task="classify", labels=("positive", "negative"), json_field="verdict")
    text = '{"verdict": "negative", "why": "a dull film"}'

    assert normalise(text, spec) == "negative"
    assert normalise(text, AnswerSpec(task="classify", labels=spec.labels)) is None


def _endpoint(kind: str) -> EndpointConfig:
    return EndpointConfig(
        name="e", kind=kind, base_url="http://upstream.test/v1", model="m",  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_only_openai_endpoints_are_sent_the_clients_response_format() -> None:
    request = CallRequest(
        messages=tuple(REVIEW), answer_set=("negative", "positive"),
        response_format=VERDICT_FORMAT,
    )
    async with httpx.AsyncClient() as client:
        hosted = OpenAIProvider(_endpoint("openai"), client)._body(request)
        vllm = VLLMProvider(_endpoint("vllm"), client)._body(request)
        llama = LlamaCppProvider(_endpoint("llamacpp"), client)._body(request)

    assert hosted["response_format"] == VERDICT_FORMAT
    assert "response_format" not in vllm and "response_format" not in llama
    # vLLM and llama.cpp are constrained to the label set itself.
    assert "structured_outputs" in vllm or "guided_choice" in vllm
    assert "grammar" in llama
