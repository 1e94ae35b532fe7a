"""An endpoint that answers from a recording (``kind = "replay"``, ``recording = "RUN.jsonl"``).

It plays back what one endpoint of a ``coe eval record`` run answered: the endpoint's ``model``
names the recorded endpoint (its own ``name`` when ``model`` is empty). A request is looked up by a
stable hash of its messages (``providers.recording.message_key``: the client's messages,
before any few-shot turns); one that was not recorded is an ``error`` call.

Timing: the provider sleeps the recorded latency and reports that latency. Sleeping alone would
order a tier's answers by latency only while the event loop keeps time: under load, two answers
due within the loop's lag would come back in one turn, and a call the replay cancels (it was still
running when the deciding answer arrived) would finish live. So the calls of one tier of one
request (the engine hands them the same ``CallRequest``) also take turns: a call answers only once
every call of its tier with a smaller recorded latency (equal: started earlier, i.e. earlier in
the tier) has answered or been cancelled, and then after a few more turns of the event loop, in
which the engine counts the answers before it and, if they decide the tier, cancels it.
Live arrival order is then exactly the order ``coe eval replay`` assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import anyio
import anyio.lowlevel

from providers.base import CallRecord, CallRequest, Provider
from providers.errors import EndpointConfigError, RecordingError
from providers.recording import message_key, read_recording

if TYPE_CHECKING:
    from providers.endpoint import EndpointConfig
    from providers.recording import RecordedCall


# Turns of the event loop a call leaves the engine after its predecessor answers: enough for the
# engine's receiving task to count that answer and cancel the tier (it needs two or three).
_ENGINE_TURNS = 8


@dataclass(slots=True)
class _Turn:
    latency_ms: float
    started: int
    done: anyio.Event = field(default_factory=anyio.Event)

    def before(self, other: _Turn) -> bool:
        return (self.latency_ms, self.started) < (other.latency_ms, other.started)


class ReplayProvider(Provider):
    # The calls in flight per CallRequest (by identity: the engine shares one across a tier, and
    # it stays alive, so its id stays unique, while any of its calls runs). Shared by every replay
    # provider of the process because the providers of one tier know nothing else of each other.
    _tiers: ClassVar[dict[int, list[_Turn]]] = {}

    def __init__(self, endpoint: EndpointConfig) -> None:
        self.name = endpoint.name
        source = endpoint.model or endpoint.name
        path = Path(endpoint.recording or "")
        try:
            recording = read_recording(path)
        except RecordingError as exc:
            raise EndpointConfigError(f"endpoint {endpoint.name!r}: {exc.message}") from None
        if source not in recording.header.endpoints:
            known = ", ".join(recording.header.endpoints)
            raise EndpointConfigError(
                f"endpoint {endpoint.name!r}: {path} has no endpoint {source!r} "
                f"(it has {known}); set model to one of them"
            )
        self._answers: dict[str, RecordedCall] = {
            message_key(example.messages): example.calls[source]
            for example in recording.examples
        }

    async def complete(self, request: CallRequest) -> CallRecord:
        recorded = self._answers.get(message_key(request.messages))
        if recorded is None:
            return CallRecord(
                endpoint=self.name, status="error", error="these messages are not in the recording"
            )
        key = id(request)
        turns = self._tiers.setdefault(key, [])
        turn = _Turn(recorded.latency_ms, started=max((t.started for t in turns), default=-1) + 1)
        turns.append(turn)
        try:
            await anyio.sleep(recorded.latency_ms / 1000.0)
            for earlier in [t for t in turns if t.before(turn)]:
                await earlier.done.wait()
            # The last earlier answer may have come back in this very turn of the loop (or one
            # that finished before this call's sleep did): let the engine count it first.
            for _ in range(_ENGINE_TURNS):
                await anyio.lowlevel.checkpoint()
            return recorded.to_record(self.name)
        finally:
            turn.done.set()
            turns.remove(turn)
            if not turns:
                del self._tiers[key]
