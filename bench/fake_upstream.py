"""A fast OpenAI-compatible fake upstream: one process, many ports, a script per port.

Each ``--endpoint`` names a port, the delay before it answers, the answer, and optionally the
answer it gives instead when the request's body contains ``#split`` (so a load generator can make
some requests disagree and escalate)::

    python bench/fake_upstream.py --endpoint port=9101,delay_ms=50,answer=positive \\
                                  --endpoint port=9102,delay_ms=500,answer=positive,split=neutral

It is a bare asyncio protocol (uvloop when installed) speaking just enough HTTP/1.1 for keep-alive
clients: any POST gets the chat completion, any GET a small JSON list of models. Nothing is parsed
beyond the request line, ``content-length`` and the ``#split`` marker, so the upstream costs the
harness tens of microseconds per call rather than a framework's hundreds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson

if TYPE_CHECKING:
    from collections.abc import Coroutine

SPLIT_MARKER = b"#split"
# Connections accepted per port, printed at exit: how well the clients reuse connections.
ACCEPTED: dict[int, int] = {}


@dataclass(frozen=True, slots=True)
class Script:
    port: int
    delay_s: float
    answer: bytes
    split: bytes


def _response(answer: str) -> bytes:
    body = orjson.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        }
    )
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


_MODELS_BODY = (
    b'{"object":"list","data":[{"id":"fake","object":"model","created":0,"owned_by":"bench"}]}'
)
_MODELS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_MODELS_BODY)).encode()
    + b"\r\n\r\n"
    + _MODELS_BODY
)


class FakeUpstream(asyncio.Protocol):
    def __init__(self, script: Script) -> None:
        self._script = script
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast("asyncio.Transport", transport)
        ACCEPTED[self._script.port] = ACCEPTED.get(self._script.port, 0) + 1

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio's signature
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                    break
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = self._buffer[end + 4 : total]
            self._buffer = self._buffer[total:]
            if head.startswith(b"GET"):
                self._write(_MODELS)
                continue
            reply = self._script.split if SPLIT_MARKER in body else self._script.answer
            if self._script.delay_s > 0:
                self._loop.call_later(self._script.delay_s, self._write, reply)
            else:
                self._write(reply)

    def _write(self, reply: bytes) -> None:
        # A client that gave up (a cancelled call) has closed the connection: nothing to send.
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(reply)


def parse_script(text: str) -> Script:
    fields = dict(part.split("=", 1) for part in text.split(","))
    answer = fields["answer"]
    return Script(
        port=int(fields["port"]),
        delay_s=float(fields.get("delay_ms", "0")) / 1000.0,
        answer=_response(answer),
        split=_response(fields.get("split", answer)),
    )


async def serve(scripts: list[Script], host: str) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            functools.partial(FakeUpstream, script), host, script.port, backlog=4096,
            reuse_address=True,
        )
        for script in scripts
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream ready on {len(servers)} port(s), pid {os.getpid()}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    print("accepted " + orjson.dumps({str(k): v for k, v in sorted(ACCEPTED.items())}).decode(),
          flush=True)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", action="append", required=True, type=parse_script)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    run_loop(serve(args.endpoint, args.host))


if __name__ == "__main__":
    main()
