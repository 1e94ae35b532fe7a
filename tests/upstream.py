"""A real OpenAI-compatible HTTP server on 127.0.0.1, scripted per test.

Each server runs uvicorn in its own thread. A test scripts what it answers (content, status, raw
garbage, logprobs) and may hold a request on a ``Gate`` until the test opens it — ordering by
events, never by sleeping.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer, quiet_config


class Gate:
    """Holds a scripted reply until the test opens it; ``entered`` says the request arrived."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def pass_through(self) -> None:
        self.entered.set()
        await anyio.to_thread.run_sync(self._open.wait)


@dataclass
class Reply:
    content: str | None = "positive"
    status: int = 200
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    )
    logprobs: list[dict[str, Any]] | None = None
    gate: Gate | None = None


class UpstreamServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self._replies: deque[Reply] = deque()
        self._default = Reply()
        self._gates: list[Gate] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._server = ThreadedServer(quiet_config(app), f"upstream-{name}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def script(self, *replies: Reply, default: Reply | None = None) -> None:
        """Answer the next requests with ``replies`` in order, then with ``default``."""
        with self._lock:
            self.release_gates()
            self._replies = deque(replies)
            self._default = default or Reply()
            self._gates = [r.gate for r in (*replies, self._default) if r.gate is not None]
            self.requests.clear()
            self.request_headers.clear()

    def release_gates(self) -> None:
        """Open every gate still scripted, so no held request outlives its test."""
        for gate in self._gates:
            gate.open()
        self._gates.clear()

    def answer(self, content: str | None, **kwargs: Any) -> None:
        self.script(default=Reply(content=content, **kwargs))

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else self._default

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(dict(request.headers))
        reply = self._next_reply()
        if reply.gate is not None:
            await reply.gate.pass_through()
        if reply.raw_body is not None:
            return Response(reply.raw_body, status_code=reply.status, headers=reply.headers)
        if reply.status != 200:
            error = {"error": {"message": f"scripted {reply.status}", "type": "server_error"}}
            return Response(json.dumps(error), status_code=reply.status, headers=reply.headers,
                            media_type="application/json")
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": reply.content},
            "finish_reason": "stop",
        }
        if reply.logprobs is not None:
            choice["logprobs"] = {"content": reply.logprobs}
        payload: dict[str, Any] = {
            "id": f"cmpl-{self.name}-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", self.name),
            "choices": [choice],
        }
        if reply.usage is not None:
            payload["usage"] = reply.usage
        return Response(json.dumps(payload), headers=reply.headers, media_type="application/json")
