"""A real HTTP server on 127.0.0.1 that speaks Anthropic's Messages API as its reference describes
it (https://platform.claude.com/docs/en/api/messages, .../api/errors), scripted per model.

``POST /v1/messages`` checks what Anthropic checks — ``x-api-key``, ``anthropic-version``, a
``model``, a positive ``max_tokens``, ``messages`` of user and assistant turns only (no
``system`` role: system text is the top-level ``system``), ``temperature`` in [0, 1] — and answers
with a ``message`` object (text content blocks, ``stop_reason``, ``usage`` with the cache counts),
or with Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``, and a
``request-id`` header.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer, quiet_config

VERSION = "2023-06-01"
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}


@dataclass
class Answer:
    text: str = "positive"
    status: int = 200
    usage: dict[str, Any] = field(default_factory=lambda: {
        "input_tokens": 10, "output_tokens": 1,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
    })
    headers: dict[str, str] = field(default_factory=dict)


class AnthropicServer:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self._answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        self._server = ThreadedServer(quiet_config(app), "anthropic")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    def answer(self, model: str, answer: Answer) -> None:
        with self._lock:
            self._answers[model] = answer

    def __enter__(self) -> AnthropicServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    async def _messages(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "invalid x-api-key")
        if request.headers.get("anthropic-version") != VERSION:
            return _error(400, "anthropic-version: header is required")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        problem = _invalid(body)
        if problem is not None:
            return _error(400, problem)
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(dict(request.headers))
            answer = self._answers.get(body["model"], Answer())
        if answer.status != 200:
            return _error(answer.status, f"scripted {answer.status}", answer.headers)
        payload = {
            "id": f"msg_{len(self.requests):04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": answer.usage,
        }
        return Response(json.dumps(payload), media_type="application/json",
                        headers={"request-id": "req_ok", **answer.headers})


def _invalid(body: Any) -> str | None:
    """What Anthropic would refuse in ``body`` with a 400, or None."""
    if not isinstance(body, dict):
        return "the request body must be an object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Field required"
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    system = body.get("system", "")
    if not isinstance(system, str | list):
        return "system: Input should be a valid string or list"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return (f"messages.{index}.role: Input should be 'user' or 'assistant' (system "
                    "prompts go in the top-level system parameter)")
        content = message.get("content")
        if not isinstance(content, str | list) or not content:
            return f"messages.{index}.content: a string or a non-empty list of blocks"
    return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": message}, "request_id": "req_err"}
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers={"request-id": "req_err", **(headers or {})})
