"""Recording a full-information run: every example to every endpoint of every tier of a route.

Each call is judged and priced as the live engine would judge and bill it (``policies.normalise``,
``gateway.billing.Biller``, GPU time metered per GPU server with ``GpuShareMeter``), then one line
per example is appended to RUN.jsonl and flushed, so an interrupted run keeps what it recorded and a
rerun skips the ids already there. Examples run ``concurrency`` at a time; the endpoints of one
example all at once. Latency is what the provider measured, queueing behind its own
``max_concurrency`` included: record with ``concurrency = 1`` for clean per-model latencies. Before
the first recorded example every endpoint answers it once, unrecorded (``warmup``): a server's first
call loads and caches what later calls reuse, and would otherwise skew the first line's latency.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from gateway.billing import Biller
from gateway.evaluation.datasets import Example, read_examples
from gateway.evaluation.recording import answer_spec, header_for_route, route_config, same_route
from policies.answers import normalise
from policies.gpu_share import GpuShareMeter
from providers.base import CallRequest
from providers.errors import RecordingError
from providers.http import make_http_client
from providers.prompting import prompt_chars
from providers.recording import RecordedCall, RecordedExample, RecordingHeader, read_recording
from providers.registry import build_providers

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectReceiveStream

    from gateway.config import Settings
    from gateway.evaluation.datasets import DataProblem
    from providers.base import CallRecord, Provider


@dataclass(slots=True)
class RecordSummary:
    out: Path
    total: int
    already: int
    recorded: int = 0
    problems: list[DataProblem] = field(default_factory=list)


class _Writer:
    """Appends lines and flushes each, so a crash loses at most the line being written."""

    def __init__(self, path: Path, header: RecordingHeader, rows: list[RecordedExample] | None):
        if rows is not None:
            # Rewrite without a line an interrupted run cut short.
            temporary = path.with_name(path.name + ".tmp")
            with temporary.open("wb") as handle:
                handle.write(orjson.dumps(header.to_json()) + b"\n")
                for row in rows:
                    handle.write(orjson.dumps(row.to_json()) + b"\n")
            os.replace(temporary, path)
        fresh = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("ab")
        if fresh:
            self.write(header.to_json())

    def write(self, line: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(line) + b"\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def plan_recording(
    settings: Settings, route_name: str, data: Path, out: Path, *, logprobs: bool
) -> tuple[RecordingHeader, list[Example], RecordSummary, list[RecordedExample] | None]:
    """What is left to record: the header, the examples not in ``out`` yet, and the summary so
    far; the last item is the rows to keep when ``out`` ends with a cut-short line."""
    if route_name not in settings.routes:
        known = ", ".join(sorted(settings.routes)) or "none"
        raise RecordingError(f"no route {route_name!r} in the config (routes: {known})")
    if not data.exists():
        raise RecordingError(f"{data}: no such file")
    header = header_for_route(
        settings, route_name, logprobs=logprobs, created_at=datetime.now(UTC).isoformat()
    )
    done: set[str] = set()
    keep: list[RecordedExample] | None = None
    if out.exists() and out.stat().st_size > 0:
        existing = read_recording(out)
        if not same_route(existing.header, header):
            raise RecordingError(
                f"{out} holds a recording of another route, answer set or logprobs setting; "
                "choose another --out to start a new one"
            )
        header = existing.header
        done = {example.id for example in existing.examples}
        if existing.truncated_tail:
            keep = existing.examples
    scan = read_examples(data)
    todo = [example for example in scan.examples if example.id not in done]
    summary = RecordSummary(
        out=out, total=len(scan.examples), already=len(scan.examples) - len(todo)
    )
    summary.problems = scan.problems
    return header, todo, summary, keep


async def record_run(
    settings: Settings,
    route_name: str,
    data: Path,
    out: Path,
    *,
    concurrency: int = 4,
    logprobs: bool = True,
    warmup: bool = True,
    on_start: Callable[[RecordSummary], None] | None = None,
    on_recorded: Callable[[], None] | None = None,
) -> RecordSummary:
    """Record every example of ``data`` not yet in ``out``; see the module doc."""
    header, todo, summary, keep = plan_recording(
        settings, route_name, data, out, logprobs=logprobs
    )
    if on_start is not None:
        on_start(summary)
    if not todo:
        return summary
    recorder = _Recorder(settings, header, logprobs=logprobs)
    send, receive = anyio.create_memory_object_stream[Example](len(todo))
    for example in todo:
        send.send_nowait(example)
    send.close()
    async with make_http_client() as client:
        providers = build_providers(settings.endpoints, client)
        try:
            if warmup:
                await recorder.example(providers, todo[0])
            with _Writer(out, header, keep) as writer:

                async def worker(examples: MemoryObjectReceiveStream[Example]) -> None:
                    async with examples:
                        async for example in examples:
                            row = await recorder.example(providers, example)
                            writer.write(row.to_json())
                            summary.recorded += 1
                            if on_recorded is not None:
                                on_recorded()

                async with anyio.create_task_group() as group:
                    for _ in range(max(1, concurrency)):
                        group.start_soon(worker, receive.clone())
                    receive.close()
        finally:
            with anyio.CancelScope(shield=True):
                for provider in providers.values():
                    await provider.aclose()
    return summary


class _Recorder:
    def __init__(self, settings: Settings, header: RecordingHeader, *, logprobs: bool) -> None:
        self._header = header
        self._spec = answer_spec(header)
        self._route = route_config(header)
        self._biller = Biller(settings)
        self._meter = GpuShareMeter()
        self._gpu = frozenset(n for n, info in header.endpoints.items() if info.gpu is not None)
        # Metered per GPU server, as the gateway does (EndpointConfig.gpu_meter_key).
        self._pools = {e.name: e.gpu_meter_key for e in settings.endpoints}
        self._logprobs = logprobs

    async def example(self, providers: dict[str, Provider], example: Example) -> RecordedExample:
        route = self._route
        request = CallRequest(
            messages=example.messages,
            max_tokens=route.max_tokens,
            temperature=route.temperature,
            answer_set=self._spec.labels if self._spec.task in ("classify", "choice") else (),
            logprobs=self._logprobs,
            # A UUID: llama-cpp-python's server answers 400 to any other x-request-id.
            request_id=uuid.uuid4().hex,
        )
        chars = prompt_chars(example.messages)
        records: dict[str, CallRecord] = {}

        async def call(name: str, tier: int) -> None:
            pool = self._pools.get(name, name)
            ticket = self._meter.begin(pool, time.monotonic()) if name in self._gpu else None
            record = await providers[name].complete(request)
            if ticket is not None:
                record.gpu_seconds = self._meter.end(ticket, time.monotonic())
            record.tier = tier
            if record.status == "ok":
                record.answer = normalise(record.text, self._spec)
                if record.answer is None:
                    record.status = "unparsable"
            record.prompt_chars = chars
            cost = self._biller.price(record)
            record.cost_usd, record.cost_estimated = cost.usd, cost.estimated
            records[name] = record

        async with anyio.create_task_group() as group:
            for tier, names in enumerate(self._header.tiers):
                for name in names:
                    group.start_soon(call, name, tier)
        calls = {
            name: RecordedCall.from_record(records[name])
            for names in self._header.tiers
            for name in names
        }
        return RecordedExample(
            id=example.id, label=example.label, messages=example.messages, calls=calls
        )
