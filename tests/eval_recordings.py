"""Hand-built recordings for the evaluation tests: every answer, latency and token count chosen."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.billing import Biller
from gateway.config import Settings, parse_settings
from gateway.evaluation.recording import answer_spec, header_for_route
from policies.answers import normalise
from providers.base import CallRecord, TokenLogprob
from providers.recording import RecordedCall, RecordedExample, Recording


@dataclass(frozen=True)
class Answer:
    """One endpoint's recorded answer: text None with status error/timeout for a failure."""

    text: str | None
    latency_ms: float
    status: str = "ok"
    tokens_in: int | None = 100
    tokens_out: int | None = 1
    # The probability the model gave its answer token (recorded as its logprob).
    p: float | None = None


def route_settings(
    tiers: list[list[str]],
    *,
    prices: dict[str, tuple[float, float]] | None = None,
    gpus: dict[str, str] | None = None,
    threshold: Any = "2/3",
    policy: str = "vote",
    recording: str | None = None,
    labels: tuple[str, ...] = ("positive", "negative"),
    wait_for_all: bool = False,
) -> Settings:
    names = [name for tier in tiers for name in tier]
    endpoints = []
    for name in names:
        endpoint: dict[str, Any] = {"name": name, "kind": "python", "function": "builtins:str"}
        if recording is not None:
            endpoint = {"name": name, "kind": "replay", "recording": recording}
        if prices and name in prices:
            endpoint["usd_per_mtok_in"], endpoint["usd_per_mtok_out"] = prices[name]
        if gpus and name in gpus:
            endpoint["gpu"] = gpus[name]
        endpoints.append(endpoint)
    return parse_settings(
        {
            "endpoints": endpoints,
            "routes": {
                "sentiment": {
                    "labels": list(labels),
                    "threshold": threshold,
                    "policy": policy,
                    "tiers": tiers,
                    "wait_for_all": wait_for_all,
                }
            },
        }
    )


def build_recording(
    settings: Settings, rows: list[tuple[str, str, str, dict[str, Answer]]]
) -> Recording:
    """``rows``: (id, prompt, label, answers per endpoint)."""
    header = header_for_route(
        settings, "sentiment", logprobs=True, created_at="2026-01-01T00:00:00+00:00"
    )
    biller = Biller(settings)
    recording = Recording(header)
    for id_, prompt, label, answers in rows:
        messages = ({"role": "user", "content": prompt},)
        calls: dict[str, RecordedCall] = {}
        for name, answer in answers.items():
            record = CallRecord(
                endpoint=name,
                status=answer.status,  # type: ignore[arg-type]
                text=answer.text,
                tokens_in=answer.tokens_in if answer.status == "ok" else None,
                tokens_out=answer.tokens_out if answer.status == "ok" else None,
                latency_ms=answer.latency_ms,
                tier=header.endpoints[name].tier,
                logprobs=(
                    (TokenLogprob(answer.text or "", math.log(answer.p)),)
                    if answer.p is not None
                    else None
                ),
                gpu_seconds=answer.latency_ms / 1000.0,
            )
            if record.status == "ok":
                record.answer = normalise(record.text, answer_spec(header))
                if record.answer is None:
                    record.status = "unparsable"
            record.prompt_chars = len(prompt)
            record.cost_usd = biller.price(record).usd
            calls[name] = RecordedCall.from_record(record)
        recording.examples.append(RecordedExample(id_, label, messages, calls))
    return recording


def write_recording(recording: Recording, path: Path) -> Path:
    lines = [orjson.dumps(recording.header.to_json())]
    lines += [orjson.dumps(example.to_json()) for example in recording.examples]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
