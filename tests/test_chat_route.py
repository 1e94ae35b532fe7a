"""The chat route is served as a plain Starlette endpoint (gateway.api.plain_route) and is
documented in the OpenAPI document exactly as a FastAPI route would be."""

from __future__ import annotations

from collections.abc import Callable

from gateway.api import create_app
from gateway.api.chat_request import OVERRIDE_HEADERS
from gateway.config import Settings


def test_the_chat_route_keeps_its_request_body_and_headers_in_the_openapi_document(
    make_settings: Callable[..., Settings],
) -> None:
    document = create_app(make_settings()).openapi()

    operation = document["paths"]["/v1/chat/completions"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "coe"} <= set(schema["properties"])
    assert {p["name"] for p in operation["parameters"]} == set(OVERRIDE_HEADERS)
