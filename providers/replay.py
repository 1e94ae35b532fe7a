"""An endpoint that answers from a recording (``kind = "replay"``, ``recording = "RUN.jsonl"``).

It plays back what one endpoint of a ``coe eval record`` run answered: the endpoint's ``model``
names the recorded endpoint (its own ``name`` when ``model`` is empty). A request is looked up by a
stable hash of its messages (``gateway.evaluation.recording.message_key``: the client's messages,
before any few-shot turns); one that was not recorded is an ``error`` call.

Timing: the provider sleeps the recorded latency before it answers and reports that latency, so
in a live tier the answers arrive in the order of their recorded latencies, which is the order
``coe eval replay`` assumes for early quorum, and the engine cancels the same calls the replay
cancels. Answers whose recorded latencies are within the event loop's scheduling jitter (well under
a millisecond) may arrive in either order live, while the replay breaks such ties by tier order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from gateway.errors import ConfigError
from gateway.evaluation.recording import RecordingError, message_key, read_recording
from providers.base import CallRecord, CallRequest, Provider

if TYPE_CHECKING:
    from gateway.config import EndpointConfig
    from gateway.evaluation.recording import RecordedCall


class ReplayProvider(Provider):
    def __init__(self, endpoint: EndpointConfig) -> None:
        self.name = endpoint.name
        source = endpoint.model or endpoint.name
        path = Path(endpoint.recording or "")
        try:
            recording = read_recording(path)
        except RecordingError as exc:
            raise ConfigError(f"endpoint {endpoint.name!r}: {exc.message}") from None
        if source not in recording.header.endpoints:
            known = ", ".join(recording.header.endpoints)
            raise ConfigError(
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
        await anyio.sleep(recorded.latency_ms / 1000.0)
        return recorded.to_record(self.name)
