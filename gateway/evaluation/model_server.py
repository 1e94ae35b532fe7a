"""Recorded models served over real HTTP: one aiohttp server, an OpenAI-compatible path per model.

``coe demo`` needs the twelve models of a recording (``providers.recording``) to answer the gateway
as hosted APIs would, with no key and no network. ``serve_recorded_models`` starts one aiohttp
server on a free loopback port, on the running event loop, with, for each recorded endpoint
``NAME``:

- ``POST /NAME/v1/chat/completions``: OpenAI's chat completion for the request's ``messages``,
  answered with the text that endpoint recorded for them, looked up as the ``replay`` provider
  looks them up (``providers.recording.message_key``: the sha256 of the canonical messages). The
  body's ``model`` is not read: the path names the model. ``POST /v1/chat/completions`` also
  works, with ``model`` naming the endpoint.
- ``GET /NAME/v1/models`` (and ``GET /v1/models`` for all).

``usage`` is sent only when the recording has both token counts of the call; otherwise it is left
out, as the recording left it out, so the gateway estimates the tokens exactly as a replay of the
recording does and marks the cost ``estimated``.

Timing follows the recording's latency model: a call answers after its recorded ``latency_ms``
divided by ``speed`` (``speed = 50``: a 5-second answer comes after 100 ms). Sleeping orders a
tier's answers by latency only up to the event loop's precision; callers that need the order
exact must not depend on it (``coe demo`` waits for every call of a tier, see
``gateway.evaluation.demo``).

A call recorded as failed (``error``, ``timeout``: no text) is answered, after its latency, with
HTTP 500 and OpenAI's error body, and a question that was not recorded with 404; neither carries
usage, so a failed call costs nothing, as in a replay. Streaming is refused (400).
"""

from __future__ import annotations

import itertools
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from aiohttp import web

from gateway.serve import loopback_socket
from providers.recording import message_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from providers.recording import RecordedCall, Recording

_OWNER = "coe-recording"
_BACKLOG = 2048


@dataclass(frozen=True, slots=True)
class RecordedModels:
    """Each recorded endpoint's calls, by the key of the messages they answered."""

    calls: dict[str, dict[str, RecordedCall]]
    speed: float = 1.0

    @classmethod
    def from_recording(cls, recording: Recording, *, speed: float = 1.0) -> RecordedModels:
        if speed <= 0:
            raise ValueError(f"speed must be positive, not {speed}")
        calls: dict[str, dict[str, RecordedCall]] = {name: {} for name in recording.endpoint_names}
        for example in recording.examples:
            key = message_key(example.messages)
            for name, call in example.calls.items():
                calls[name][key] = call
        return cls(calls, speed)

    @property
    def names(self) -> list[str]:
        return list(self.calls)


@dataclass(frozen=True, slots=True)
class ModelServer:
    """A running server: ``base_url(name)`` is the OpenAI base URL of one recorded model."""

    root: str
    models: RecordedModels

    def base_url(self, name: str) -> str:
        if name not in self.models.calls:
            raise KeyError(f"no recorded model {name!r}")
        return f"{self.root}/{name}/v1"


def model_app(models: RecordedModels) -> web.Application:
    """The aiohttp application serving ``models``."""
    ids = itertools.count(1)

    async def chat(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "the body is not JSON", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "invalid_body")
        name = request.match_info.get("model") or body.get("model")
        table = models.calls.get(name) if isinstance(name, str) else None
        if table is None:
            return _error(404, f"no recorded model {name!r}", "model_not_found")
        if body.get("stream"):
            return _error(400, "streaming is not supported by recorded models", "no_stream")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(400, "messages must be a list of objects", "invalid_messages")
        call = table.get(message_key(messages))
        if call is None:
            return _error(404, f"{name} has no recorded answer to these messages", "not_recorded")
        await anyio.sleep(call.latency_ms / 1000.0 / models.speed)
        if call.text is None:
            return _error(500, f"{name} failed here when recorded: {call.error or call.status}",
                          "recorded_failure")
        return web.Response(
            body=orjson.dumps(_completion(f"chatcmpl-{next(ids)}", str(name), call)),
            content_type="application/json",
        )

    async def list_models(request: web.Request) -> web.Response:
        name = request.match_info.get("model")
        names = [name] if name in models.calls else models.names if name is None else []
        if not names:
            return _error(404, f"no recorded model {name!r}", "model_not_found")
        data = [{"id": n, "object": "model", "created": 0, "owned_by": _OWNER} for n in names]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}),
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/{model}/v1/chat/completions", chat)
    app.router.add_get("/{model}/v1/models", list_models)
    return app


def _completion(id_: str, name: str, call: RecordedCall) -> dict[str, Any]:
    completion: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": call.text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }
    if call.tokens_in is not None and call.tokens_out is not None:
        completion["usage"] = {
            "prompt_tokens": call.tokens_in,
            "completion_tokens": call.tokens_out,
            "total_tokens": call.tokens_in + call.tokens_out,
        }
    return completion


def _error(status: int, message: str, code: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@asynccontextmanager
async def serve_recorded_models(
    recording: Recording, *, speed: float = 1.0
) -> AsyncIterator[ModelServer]:
    """Serve every endpoint of ``recording`` on a free loopback port for the block."""
    models = RecordedModels.from_recording(recording, speed=speed)
    runner = web.AppRunner(
        model_app(models), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    listener = loopback_socket()
    port = listener.getsockname()[1]
    try:
        # A deep accept queue: a gateway with 64 questions in flight opens hundreds of
        # connections at once, and a dropped SYN costs a second (or a connect timeout).
        site = web.SockSite(runner, listener, backlog=_BACKLOG)
        await site.start()
        yield ModelServer(f"http://127.0.0.1:{port}", models)
    finally:
        await runner.cleanup()
        listener.close()
