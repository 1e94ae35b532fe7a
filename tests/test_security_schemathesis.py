"""schemathesis over every operation of the gateway's OpenAPI document: no input gets a 5xx.

The default run sends a few hundred cases; ``bench/fuzz.py`` sends thousands (figures in
``bench/RELIABILITY.md``).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import Settings
from tests.fuzzing import fuzz, gateway_schema
from tests.gateway_server import GatewayServer
from tests.upstream import UpstreamServer

EXAMPLES = 50


def test_the_document_describes_the_chat_body_and_override_headers(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> None:
    with GatewayServer(make_settings()) as gateway:
        schema = gateway_schema(gateway.url, ["sentiment"])

    chat = schema.raw_schema["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "messages"]
    assert "$ref" not in str(body)
    assert {p["name"] for p in chat["parameters"]} == {
        "x-coe-threshold", "x-coe-policy", "x-coe-max-tier", "x-coe-tags"
    }
    responses = schema.raw_schema["paths"]["/v1/responses"]["post"]
    body = responses["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "input"]
    assert "$ref" not in str(body)
    assert {p["name"] for p in responses["parameters"]} == {p["name"] for p in chat["parameters"]}
    costs = schema.raw_schema["paths"]["/v1/coe/costs"]["get"]
    assert {p["name"] for p in costs["parameters"]} == {"since", "until", "group_by", "tenant"}


def test_no_generated_input_gets_a_5xx(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> None:
    with GatewayServer(make_settings()) as gateway:
        report = fuzz(gateway.url, gateway_schema(gateway.url, ["sentiment"]), EXAMPLES)

    assert report.server_errors == []
    assert {label.split(" [")[0] for label in report.cases} == {
        "POST /v1/chat/completions", "POST /v1/responses", "GET /v1/coe/costs",
        "GET /v1/models", "GET /healthz", "GET /readyz", "GET /metrics", "POST /v1/coe/reload",
        "GET /v1/coe/audit",
    }
    assert report.total >= 5 * EXAMPLES
    assert report.statuses[200] > 0 and report.statuses[400] > 0
