"""A misbehaving OpenAI-compatible upstream on 127.0.0.1, written on raw asyncio streams.

The Starlette upstream (``tests/upstream.py``) can only answer well-formed HTTP; this one can also
break the connection itself: reset it mid-body, close it without a response, truncate the body,
trickle it byte by byte, or never answer. A schedule maps each call's number (1, 2, … in order of
arrival, with its body and how often that body came before) to the fault it gets, or None for a
correct answer; ``served`` says what each call got.
Every response closes its connection, so each call is one connection and faults never leak into
the next call.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

Fault = Literal[
    "http_500",
    "http_502",
    "http_503",
    "http_429",
    "reset_mid_body",
    "close_without_response",
    "hang",
    "truncated_body",
    "not_json",
    "missing_fields",
    "empty_choices",
    "trickle_slow",
    "trickle_timeout",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)
# The status a call record (and the ledger) must show for each fault, with no retries.
EXPECTED_STATUS: dict[Fault | None, str] = {
    **dict.fromkeys(FAULTS, "error"),
    "hang": "timeout",
    "trickle_timeout": "timeout",
    "trickle_slow": "ok",
    None: "ok",
}
# Faults a retry may cure: the request reached no model, or the upstream asked to be asked again.
RETRYABLE: tuple[Fault, ...] = (
    "http_500", "http_502", "http_503", "http_429", "reset_mid_body", "close_without_response",
)



@dataclass(frozen=True, slots=True)
class Call:
    number: int  # 1 for the first call the server sees
    body: dict[str, Any]
    repeats: int  # how many calls with this same body came before (0: not a retry)


Schedule = Callable[[Call], Fault | None]
Answer = Callable[[dict[str, Any]], str]


def every(nth: int, faults: tuple[Fault, ...], offset: int = 0, phase: int = 0) -> Schedule:
    """Every ``nth`` call (the first being call ``nth - phase``) gets the next of ``faults`` in
    turn, from ``offset``; others pass."""

    def schedule(call: Call) -> Fault | None:
        number = call.number + phase
        if number % nth:
            return None
        return faults[(number // nth - 1 + offset) % len(faults)]

    return schedule


def first_tries(schedule: Schedule) -> Schedule:
    """``schedule`` for first tries only: a retry of the same body always passes."""
    return lambda call: None if call.repeats else schedule(call)


def first(count: int, fault: Fault) -> Schedule:
    """The first ``count`` calls get ``fault``; later ones pass."""
    return lambda call: fault if call.number <= count else None


def healthy(call: Call) -> Fault | None:
    return None


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FaultServer:
    def __init__(
        self,
        name: str,
        answer: Answer,
        schedule: Schedule = healthy,
        *,
        retry_after: str = "1",
        trickle_delay_s: float = 0.2,
    ) -> None:
        self.name = name
        self.served: list[Fault | None] = []
        self._answer = answer
        self._schedule = schedule
        self._retry_after = retry_after
        self._trickle_delay_s = trickle_delay_s
        self._bodies: Counter[bytes] = Counter()
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name=f"fault-{name}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set_schedule(self, schedule: Schedule) -> None:
        """Serve ``schedule`` from the next call on, numbering calls from 1 again."""
        with self._lock:
            self._schedule = schedule
            self.served.clear()
            self._bodies.clear()

    def start(self) -> FaultServer:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"fault server {self.name} did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, sock=self._socket)
        )
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away: what it saw is its own business
        except asyncio.CancelledError:
            # Stopped by ``stop``; ending quietly keeps asyncio's stream callback from logging it.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        raw = await reader.readexactly(length)
        request = json.loads(raw) if length else {}
        with self._lock:
            call = Call(number=len(self.served) + 1, body=request, repeats=self._bodies[raw])
            self._bodies[raw] += 1
            fault = self._schedule(call)
            self.served.append(fault)
        await self._respond(fault, request, reader, writer)

    async def _respond(
        self,
        fault: Fault | None,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        good = self._completion(request)
        if fault is None:
            await _send(writer, 200, good)
        elif fault.startswith("http_"):
            status = int(fault.removeprefix("http_"))
            headers = {"retry-after": self._retry_after} if status == 429 else {}
            body = json.dumps({"error": {"message": f"fault {status}", "type": "server_error"}})
            await _send(writer, status, body.encode(), headers)
        elif fault == "close_without_response":
            return
        elif fault == "hang":
            await reader.read()  # until the client gives up and closes
        elif fault == "reset_mid_body":
            writer.write(_head(200, len(good)) + good[: len(good) // 2])
            await writer.drain()
            # SO_LINGER 0: close with a RST instead of a FIN.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif fault == "truncated_body":
            writer.write(_head(200, len(good)) + good[: len(good) // 2])
            await writer.drain()
        elif fault == "not_json":
            await _send(writer, 200, b"<html><body>502 Bad Gateway</body></html>",
                        {"content-type": "text/html"})
        elif fault == "missing_fields":
            await _send(writer, 200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
        elif fault == "empty_choices":
            payload = {"id": "x", "object": "chat.completion", "choices": [], "usage": _USAGE}
            await _send(writer, 200, json.dumps(payload).encode())
        elif fault == "trickle_slow":
            await _trickle(writer, reader, good, chunks=8, delay_s=0.01)
        else:  # trickle_timeout
            await _trickle(writer, reader, good, chunks=len(good), delay_s=self._trickle_delay_s)

    def _completion(self, request: dict[str, Any]) -> bytes:
        payload = {
            "id": f"cmpl-{self.name}",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", self.name),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._answer(request)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
        return json.dumps(payload).encode()


_USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def _head(status: int, length: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"content-length: {length}", "connection: close"]
    fields = {"content-type": "application/json", **(headers or {})}
    lines += [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    writer.write(_head(status, len(body), headers) + body)
    await writer.drain()


async def _trickle(
    writer: asyncio.StreamWriter,
    reader: asyncio.StreamReader,
    body: bytes,
    *,
    chunks: int,
    delay_s: float,
) -> None:
    writer.write(_head(200, len(body)))
    size = max(1, -(-len(body) // chunks))
    for start in range(0, len(body), size):
        if reader.at_eof():
            return  # the client gave up
        writer.write(body[start : start + size])
        await writer.drain()
        await asyncio.sleep(delay_s)
