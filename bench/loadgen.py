"""An open-loop load generator: requests leave at a fixed rate whether or not answers came back.

Request ``i`` is due at ``t0 + i / rate``; it goes out on the longest-idle keep-alive connection, or
on a new one when every connection is busy, so a slow server never slows the sending (no coordinated
omission). Latency runs from the moment the generator sends (connecting included) to the last byte
of the answer; how late the sends left against their schedule is reported as ``send_lag_ms`` so a
generator that could not keep up shows it. Prints one JSON object::

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/chat/completions --rate 200 \\
        --requests 4000 --body '{"model": "plain", "messages": [...]}'

``--split-every K`` appends `` #split`` to the last message of every K-th request (see
fake_upstream.py); their latencies are reported apart as ``split``. Once the ``--warmup`` requests
are answered, the line ``measuring`` goes to stderr: what the server spends from then on is what
the recorded requests cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import orjson

from bench.fake_upstream import run_loop
from gateway.stats import percentile

ESCALATED = b'"decision":"escalated"'
# The line written to stderr once the warm-up is over and the recorded requests start.
MEASURING = "measuring"


@dataclass(slots=True)
class Stats:
    latencies: list[float] = field(default_factory=list)
    split_latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0
    escalated: int = 0
    sample_error: str | None = None
    max_lag_s: float = 0.0
    connections: int = 0


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight; it reports each
    answer to its generator from ``data_received``, with no task or future per request."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.split = False
        self.record = False
        self.busy = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.generator.failed(self, ConnectionError(f"connection lost: {exc}"))

    def send(self, payload: bytes, started: float, split: bool, record: bool) -> None:
        assert self.transport is not None
        self.started, self.split, self.record, self.busy = started, split, record, True
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        parsed = _parse_response(self._buffer)
        if parsed is None:
            return
        status, body, used, close = parsed
        del self._buffer[:used]
        self.busy = False
        if close and self.transport is not None:
            # The server's last answer on this connection (HTTP/1.1): not reused.
            self.transport.close()
            self.transport = None
        self.generator.answered(self, status, body, time.perf_counter() - self.started)


def _parse_response(buffer: bytearray) -> tuple[int, bytes, int, bool] | None:
    """The first response in ``buffer``: status, body, bytes used, and whether the server
    closes the connection after it."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    start = end + 4
    if not chunked:
        length = length or 0
        if len(buffer) < start + length:
            return None
        return status, bytes(buffer[start : start + length]), start + length, close
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        chunk_start = line_end + 2
        if len(buffer) < chunk_start + size + 2:
            return None
        body += buffer[chunk_start : chunk_start + size]
        position = chunk_start + size + 2
        if size == 0:
            return status, bytes(body), position, close


class Generator:
    def __init__(self, host: str, port: int, payloads: tuple[bytes, bytes], split_every: int):
        self._host = host
        self._port = port
        self._payloads = payloads
        self._split_every = split_every
        # Oldest idle connection first: requests rotate over every open connection, as many
        # clients' would, so a server with several worker processes gets its share on each.
        self._idle: deque[Connection] = deque()
        self._connecting: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._all_sent: asyncio.Event | None = None
        self.stats = Stats()

    def _fire(self, index: int, started: float, record: bool) -> None:
        split = self._split_every > 0 and index % self._split_every == self._split_every - 1
        self._outstanding += 1
        while self._idle:
            connection = self._idle.popleft()
            if connection.transport is not None and not connection.transport.is_closing():
                connection.send(self._payloads[split], started, split, record)
                return
        # Every connection is busy: open another rather than wait (open loop).
        task = asyncio.get_running_loop().create_task(self._connect(started, split, record))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, started: float, split: bool, record: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(self), self._host, self._port
            )
        except OSError as exc:
            self._failed(record, exc)
            return
        self.stats.connections += 1
        connection.send(self._payloads[split], started, split, record)

    def answered(self, connection: Connection, status: int, body: bytes, elapsed: float) -> None:
        self._idle.append(connection)
        self._settle()
        if not connection.record:
            return
        stats = self.stats
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        if status != 200:
            stats.sample_error = stats.sample_error or body[:300].decode(errors="replace")
            return
        if ESCALATED in body:
            stats.escalated += 1
        (stats.split_latencies if connection.split else stats.latencies).append(elapsed)

    def failed(self, connection: Connection, exc: Exception) -> None:
        self._failed(connection.record, exc)

    def _failed(self, record: bool, exc: Exception) -> None:
        self._settle()
        if record:
            self.stats.failures += 1
            self.stats.sample_error = self.stats.sample_error or repr(exc)

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0 and self._all_sent is not None:
            self._all_sent.set()

    def close(self) -> None:
        """Close the kept-alive connections."""
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()

    async def run(self, rate: float, count: int, *, record: bool) -> float:
        """Send ``count`` requests at ``rate``; return the seconds the sending took."""
        interval = 1.0 / rate
        self._all_sent = None
        t0 = time.perf_counter()
        index = 0
        while index < count:
            now = time.perf_counter()
            due = t0 + index * interval
            if due > now:
                await asyncio.sleep(due - now)
                now = time.perf_counter()
            while index < count and t0 + index * interval <= now:
                lag = now - (t0 + index * interval)
                if record and lag > self.stats.max_lag_s:
                    self.stats.max_lag_s = lag
                self._fire(index, now, record)
                index += 1
        sending = time.perf_counter() - t0
        if self._outstanding:
            self._all_sent = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_sent.wait(), timeout=60)
        return sending


def quantiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of latencies in seconds ({} when there are none);
    percentiles by gateway.stats.percentile (linear between closest ranks, numpy's default)."""
    if not values:
        return {}
    ms = [value * 1000.0 for value in values]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "mean": math.fsum(ms) / len(ms),
    }


def build_payloads(url: str, body: bytes, headers: list[str]) -> tuple[bytes, bytes]:
    parts = urlsplit(url)
    document = orjson.loads(body)
    split_document = orjson.loads(body)
    last = split_document["messages"][-1]
    last["content"] = f"{last['content']} #split"

    def payload(content: bytes) -> bytes:
        head = (
            f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(content)}\r\n"
            + "".join(f"{h}\r\n" for h in headers)
            + "\r\n"
        )
        return head.encode() + content

    return payload(orjson.dumps(document)), payload(orjson.dumps(split_document))


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    generator = Generator(
        parts.hostname or "127.0.0.1",
        parts.port or 80,
        build_payloads(args.url, args.body.encode(), args.header),
        args.split_every,
    )
    if args.warmup:
        await generator.run(min(args.rate, 200.0), args.warmup, record=False)
    # For a caller that measures the server from outside (bench/run.py reads its CPU time here).
    sys.stderr.write(f"{MEASURING}\n")
    sys.stderr.flush()
    cpu0 = time.process_time()
    sending = await generator.run(args.rate, args.requests, record=True)
    cpu = time.process_time() - cpu0
    generator.close()
    stats = generator.stats
    answered = len(stats.latencies) + len(stats.split_latencies)
    return {
        "target_rate": args.rate,
        "sent": args.requests,
        "achieved_rate": args.requests / sending if sending > 0 else 0.0,
        "ok": answered,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "failures": stats.failures,
        "unanswered": args.requests - answered - stats.failures
        - sum(v for k, v in stats.statuses.items() if k != 200),
        "escalated": stats.escalated,
        "sample_error": stats.sample_error,
        "max_send_lag_ms": stats.max_lag_s * 1000.0,
        "connections": stats.connections,
        "generator_cpu_s": cpu,
        "latency_ms": quantiles(stats.latencies + stats.split_latencies),
        "plain_ms": quantiles(stats.latencies),
        "split_ms": quantiles(stats.split_latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0, help="unrecorded requests first")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument("--split-every", type=int, default=0)
    args = parser.parse_args()
    result: dict[str, object] = {}

    async def go() -> None:
        result.update(await main_async(args))

    run_loop(go())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
