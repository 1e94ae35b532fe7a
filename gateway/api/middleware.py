"""Plain ASGI middleware: a request id on every exchange, and a cap on request body size."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from gateway.errors import PayloadTooLarge
from gateway.logs import request_id_var

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestIdMiddleware:
    """Keeps a client's well-formed ``x-request-id`` (or makes one) and echoes it back, on every
    answer that passes through it: 200s and the app's 4xx and 502/504 alike. Two answers do not:
    a 500, which Starlette sends from its outermost layer (the app's handler adds the id this
    middleware left in ``scope["state"]``), and a 431, which the HTTP protocol sends before the
    app is called, from a head it did not finish reading — no id is known there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex.encode()
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER and _SAFE_REQUEST_ID.fullmatch(value):
                request_id = value
                break
        text = request_id.decode()
        scope.setdefault("state", {})["request_id"] = text

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        token = request_id_var.set(text)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes``, by Content-Length up front or while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared_too_large = any(
            name == b"content-length" and value.isdigit() and int(value) > self.max_bytes
            for name, value in scope["headers"]
        )
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared_too_large:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
