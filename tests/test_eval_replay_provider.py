"""The ``replay`` endpoint kind: answers, tokens, logprobs and latency from a recording."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest

from providers.base import CallRequest
from providers.endpoint import EndpointConfig
from providers.errors import EndpointConfigError
from providers.replay import ReplayProvider
from tests.eval_recordings import Answer, build_recording, route_settings, write_recording


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    settings = route_settings([["a", "b"]])
    rows = [
        ("1", "good", "positive", {"a": Answer("positive", 2.0, p=0.9, tokens_in=12),
                                   "b": Answer(None, 1.0, status="timeout")}),
        ("2", "bad", "negative", {"a": Answer("I think negative", 3.0),
                                  "b": Answer("hmm", 1.0)}),
    ]
    return write_recording(build_recording(settings, rows), tmp_path / "run.jsonl")


def provider(recording: Path, name: str = "a", model: str = "") -> ReplayProvider:
    return ReplayProvider(
        EndpointConfig(name=name, kind="replay", recording=str(recording), model=model)
    )


def request(prompt: str) -> CallRequest:
    return CallRequest(messages=({"role": "user", "content": prompt},))


@pytest.mark.anyio
async def test_it_answers_with_the_recorded_call(recording: Path) -> None:
    record = await provider(recording).complete(request("good"))
    assert (record.endpoint, record.status, record.text) == ("a", "ok", "positive")
    assert (record.tokens_in, record.tokens_out, record.latency_ms) == (12, 1, 2.0)
    assert record.logprobs is not None
    assert math.exp(record.logprobs[0].logprob) == pytest.approx(0.9, abs=1e-4)


@pytest.mark.anyio
async def test_failures_and_unparsable_text_replay_as_the_upstream_said(recording: Path) -> None:
    timed_out = await provider(recording, "b").complete(request("good"))
    assert timed_out.status == "timeout"
    # "hmm" was unparsable: the upstream said ok, the engine judges the text again.
    rambling = await provider(recording, "b").complete(request("bad"))
    assert (rambling.status, rambling.text) == ("ok", "hmm")


@pytest.mark.anyio
async def test_model_names_the_recorded_endpoint(recording: Path) -> None:
    record = await provider(recording, name="live-b", model="b").complete(request("bad"))
    assert (record.endpoint, record.text) == ("live-b", "hmm")


@pytest.mark.anyio
async def test_messages_not_in_the_recording_are_an_error(recording: Path) -> None:
    record = await provider(recording).complete(request("never recorded"))
    assert record.status == "error" and "not in the recording" in (record.error or "")


@pytest.mark.anyio
async def test_a_tier_answers_in_recorded_latency_order(recording: Path) -> None:
    # b (1 ms) answers before a (2 ms) even though a was called first.
    order: list[str] = []
    shared = request("good")

    async def call(name: str) -> None:
        await provider(recording, name).complete(shared)
        order.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(call, "a")
        group.start_soon(call, "b")
    assert order == ["b", "a"]


def test_an_unknown_endpoint_or_file_stops_the_start(recording: Path, tmp_path: Path) -> None:
    with pytest.raises(EndpointConfigError, match="no endpoint 'zz'"):
        provider(recording, model="zz")
    with pytest.raises(EndpointConfigError, match="no such file"):
        provider(tmp_path / "nope.jsonl")
