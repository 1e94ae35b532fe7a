"""The recording format (RUN.jsonl): a full-information run, one line per example.

The first line is a header that holds everything a replay needs, so replays need no config file::

    {"coe_recording": 1, "route_name": "sentiment", "route": {the route's config, as JSON},
     "endpoints": [{"name", "tier", "kind", "model", "usd_per_mtok_in", "usd_per_mtok_out",
                    "gpu", "gpus", "gpu_hour_usd"}], "logprobs": true, "created_at": "..."}

Every other line is one example, answered by every endpoint of every tier::

    {"id", "label", "messages": [...], "calls": {"endpoint": {"tier", "status", "text", "answer",
     "tokens_in", "tokens_out", "latency_ms", "cost_usd", "gpu_seconds", "logprobs", "error"}}}

A call's keys whose value is null (no text, no usage reported, no logprobs, no error) are left out.

Logprobs are compact: ``[[token, logprob], ...]``, with a third item ``[[alt, logprob], ...]`` when
the top alternatives were recorded; logprobs are rounded to 4 decimals.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from policies.logprobs import TokenLogprob, mean_logprob
from providers.base import CallRecord
from providers.errors import RecordingError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from providers.base import CallStatus

RECORDING_VERSION = 1
_LOGPROB_DIGITS = 4


def message_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """A stable key for a conversation: the sha256 of its canonical JSON."""
    canonical = orjson.dumps([dict(m) for m in messages], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    name: str
    tier: int
    kind: str
    model: str
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    gpu: str | None
    gpus: int
    gpu_hour_usd: float | None

    @property
    def hourly_usd(self) -> float | None:
        """What the endpoint's GPUs rent for, per hour; None for per-token pricing."""
        return None if self.gpu_hour_usd is None else self.gpu_hour_usd * self.gpus


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    route_name: str
    # The route's config table as JSON; the gateway validates it (``gateway.evaluation.recording``).
    route: Mapping[str, Any]
    endpoints: dict[str, EndpointInfo]
    logprobs: bool
    created_at: str

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(tier) for tier in self.route["tiers"])

    def to_json(self) -> dict[str, Any]:
        return {
            "coe_recording": RECORDING_VERSION,
            "route_name": self.route_name,
            "route": dict(self.route),
            "endpoints": [_dump_info(info) for info in self.endpoints.values()],
            "logprobs": self.logprobs,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, raw: Any) -> RecordingHeader:
        if not isinstance(raw, dict) or raw.get("coe_recording") != RECORDING_VERSION:
            raise ValueError(f"not a version-{RECORDING_VERSION} recording header")
        route = raw["route"]
        if not isinstance(route, dict) or not isinstance(route.get("tiers"), list):
            raise ValueError("the header's route has no tiers")
        endpoints = {e["name"]: EndpointInfo(**e) for e in raw["endpoints"]}
        return cls(
            route_name=str(raw["route_name"]),
            route=route,
            endpoints=endpoints,
            logprobs=bool(raw["logprobs"]),
            created_at=str(raw["created_at"]),
        )


def _dump_info(info: EndpointInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in info.__slots__}


@dataclass(frozen=True, slots=True)
class RecordedCall:
    tier: int
    status: CallStatus
    text: str | None
    answer: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float
    cost_usd: float
    gpu_seconds: float
    logprobs: tuple[TokenLogprob, ...] | None
    error: str | None = None

    @property
    def mean_logprob(self) -> float | None:
        return mean_logprob(self.logprobs)

    @classmethod
    def from_record(cls, record: CallRecord) -> RecordedCall:
        return cls(
            tier=record.tier,
            status=record.status,
            text=record.text,
            answer=record.answer,
            tokens_in=record.tokens_in,
            tokens_out=record.tokens_out,
            latency_ms=round(record.latency_ms, 3),
            # Informative only (a replay prices calls again): four significant digits keep a
            # recording small.
            cost_usd=float(f"{record.cost_usd:.4g}"),
            gpu_seconds=round(record.gpu_seconds, 6),
            logprobs=_round_logprobs(record.logprobs),
            error=record.error,
        )

    def to_record(self, endpoint: str) -> CallRecord:
        """The call as a provider would have returned it (before normalising and billing)."""
        return CallRecord(
            endpoint=endpoint,
            status="ok" if self.status == "unparsable" else self.status,
            text=self.text,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            logprobs=self.logprobs,
            latency_ms=self.latency_ms,
            error=self.error,
        )

    def to_json(self) -> dict[str, Any]:
        """The call's line; keys whose value is None are left out."""
        line = {
            "tier": self.tier,
            "status": self.status,
            "text": self.text,
            "answer": self.answer,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "latency_ms": self.latency_ms,
            "cost_usd": self.cost_usd,
            "gpu_seconds": self.gpu_seconds,
            "logprobs": _dump_logprobs(self.logprobs),
            "error": self.error,
        }
        return {key: value for key, value in line.items() if value is not None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RecordedCall:
        return cls(
            tier=int(raw["tier"]),
            status=raw["status"],
            text=raw.get("text"),
            answer=raw.get("answer"),
            tokens_in=raw.get("tokens_in"),
            tokens_out=raw.get("tokens_out"),
            latency_ms=float(raw["latency_ms"]),
            cost_usd=float(raw.get("cost_usd", 0.0)),
            gpu_seconds=float(raw.get("gpu_seconds", 0.0)),
            logprobs=_load_logprobs(raw.get("logprobs")),
            error=raw.get("error"),
        )


@dataclass(frozen=True, slots=True)
class RecordedExample:
    id: str
    label: str
    messages: tuple[Mapping[str, Any], ...]
    calls: dict[str, RecordedCall]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "messages": [dict(m) for m in self.messages],
            "calls": {name: call.to_json() for name, call in self.calls.items()},
        }

    @classmethod
    def from_json(cls, raw: Any) -> RecordedExample:
        if not isinstance(raw, dict):
            raise ValueError("a recorded example must be a JSON object")
        return cls(
            id=str(raw["id"]),
            label=str(raw["label"]),
            messages=tuple(raw["messages"]),
            calls={name: RecordedCall.from_json(c) for name, c in raw["calls"].items()},
        )


@dataclass(slots=True)
class Recording:
    header: RecordingHeader
    examples: list[RecordedExample] = field(default_factory=list)
    # A line cut short by an interrupted run (the last one only); a rerun records it again.
    truncated_tail: bool = False

    @property
    def endpoint_names(self) -> list[str]:
        return [name for tier in self.header.tiers for name in tier]


def read_recording(path: Path) -> Recording:
    """Read RUN.jsonl (gzipped when it ends in ``.gz``); any bad line other than a cut-short last
    one is a RecordingError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RecordingError(f"{path}: not a gzipped recording: {exc}") from None
    lines = raw.splitlines()
    if not lines:
        raise RecordingError(f"{path}: empty, not a recording")
    try:
        header = RecordingHeader.from_json(orjson.loads(lines[0]))
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path}:1: not a recording header: {exc}") from None
    recording = Recording(header)
    names = set(header.endpoints)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            example = RecordedExample.from_json(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            if number == len(lines) and not line.endswith(b"}"):
                recording.truncated_tail = True
                break
            raise RecordingError(f"{path}:{number}: not a recorded example: {exc}") from None
        if set(example.calls) != names:
            raise RecordingError(
                f"{path}:{number}: example {example.id!r} has calls for "
                f"{sorted(example.calls)}, the header names {sorted(names)}"
            )
        recording.examples.append(example)
    return recording


def _round_logprobs(
    logprobs: tuple[TokenLogprob, ...] | None,
) -> tuple[TokenLogprob, ...] | None:
    if logprobs is None:
        return None
    return tuple(
        TokenLogprob(
            token=t.token,
            logprob=round(t.logprob, _LOGPROB_DIGITS),
            top=tuple((alt, round(lp, _LOGPROB_DIGITS)) for alt, lp in t.top),
        )
        for t in logprobs
    )


def _dump_logprobs(logprobs: tuple[TokenLogprob, ...] | None) -> list[list[Any]] | None:
    if logprobs is None:
        return None
    return [
        [t.token, t.logprob, [list(pair) for pair in t.top]] if t.top else [t.token, t.logprob]
        for t in logprobs
    ]


def _load_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    if raw is None:
        return None
    return tuple(
        TokenLogprob(
            token=str(item[0]),
            logprob=float(item[1]),
            top=tuple((str(a), float(lp)) for a, lp in item[2]) if len(item) > 2 else (),
        )
        for item in raw
    )
