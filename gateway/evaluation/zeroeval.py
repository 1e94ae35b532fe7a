"""Twelve real LLMs' answers to GSM8K (ZeroEval) as a full-information recording (RUN.jsonl).

``shared/data/gsm8k-zeroeval`` (see ``shared/data/README.md``) holds, for GSM8K's 1,319 test
questions, the raw answer texts of twelve models, as recorded by WildEval/ZeroEval (Apache-2.0) at
commit 8c1485ed, and each model's price per million tokens (from FrugalGPT's
``config/serviceinfo.json``, Apache-2.0). ``convert_gsm8k_zeroeval`` turns them into the recording
``coe eval record`` would have written had it called these models: route ``gsm8k`` (task
``number``), tier 0 the six cheap models, tier 1 the six expensive ones, one call per model per
question. A call's ``status`` is ``ok`` with ``answer`` the text read by ``policies.answers``
(``unparsable``, as ``coe eval record`` writes it, when that reads no number); the label is the
gold number read the same way.

Endpoint names (short, stable; the ``model`` is the generator ZeroEval names)::

    tier 0  gemini-1.5-flash  llama-3-8b  llama-3.1-8b  gemma-2-9b  gpt-4o-mini  claude-3-haiku
    tier 1  llama-3.1-70b  qwen2-72b  gemini-1.5-pro  gpt-4o-0806  claude-3.5-sonnet  gpt-4o-0513

Token counts were not recorded, so calls carry none (``tokens_in``/``tokens_out`` absent): the
biller then estimates them from the text (characters / 4, ``policies.pricing.estimate_tokens``) and
marks every cost ``estimated``.

Latency is a MODEL, not a measurement (ZeroEval kept no timings): a call takes its model's time to
first token plus its estimated output tokens divided by its output speed,
``latency_ms = ttft_ms + estimate_tokens(text) × 1000 / tokens_per_s``. The per-model figures are
round numbers in the range public API benchmarks reported for these models when they were current
(2024): Artificial Analysis' leaderboard (artificialanalysis.ai: median time to first token and
output tokens per second over 14 days), an operator's production figures (s-anand.net, "How fast
are LLMs in production?": Claude 3 Haiku and 3.5 Sonnet above 70 tokens/s, GPT-4o and 4o-mini
50–60, Gemini 1.5 Flash and Pro 30–50) and provider comparison tables (getapipulse.com: Llama 3.1
8B ~150 ms and ~150 tokens/s, GPT-4o mini ~220 ms and ~100 tokens/s). Those sources disagree with
one another by up to 2–3×; treat latencies of this recording as plausible orders of magnitude for
comparing cascades, never as what these models take.

The conversion is deterministic (fixed ``created_at``, fixed gzip header), so converting the shared
data again reproduces ``gateway/demo_data/gsm8k-zeroeval.jsonl.gz`` byte for byte (a test checks
the decompressed lines).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config import RouteConfig
from policies.answers import normalise
from policies.pricing import Price, estimate_tokens, price_call
from providers.recording import (
    EndpointInfo,
    RecordedCall,
    RecordedExample,
    Recording,
    RecordingHeader,
)

if TYPE_CHECKING:
    from pathlib import Path

    from providers.base import CallStatus

ROUTE_NAME = "gsm8k"
# Fixed so that a conversion is reproducible byte for byte; the data were recorded in 2024.
CREATED_AT = "1970-01-01T00:00:00+00:00"
ANSWERS_FILE = "answers.jsonl"
MODELS_FILE = "models.json"
BUNDLED_NAME = "gsm8k-zeroeval.jsonl.gz"


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """A modelled call time: ``ttft_ms + output tokens × 1000 / tokens_per_s``."""

    ttft_ms: float
    tokens_per_s: float

    def latency_ms(self, text: str | None) -> float:
        return round(self.ttft_ms + estimate_tokens(text) * 1000.0 / self.tokens_per_s, 3)


@dataclass(frozen=True, slots=True)
class ZeroEvalModel:
    source: str  # the model's name in the data
    name: str  # the endpoint's name in the recording
    tier: int
    latency: LatencyModel


MODELS: tuple[ZeroEvalModel, ...] = (
    ZeroEvalModel("gemini-1.5-flash", "gemini-1.5-flash", 0, LatencyModel(400, 160)),
    ZeroEvalModel("Meta-Llama-3-8B-Instruct", "llama-3-8b", 0, LatencyModel(300, 150)),
    ZeroEvalModel("Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b", 0, LatencyModel(300, 150)),
    ZeroEvalModel("gemma-2-9b-it", "gemma-2-9b", 0, LatencyModel(300, 120)),
    ZeroEvalModel("gpt-4o-mini-2024-07-18", "gpt-4o-mini", 0, LatencyModel(450, 90)),
    ZeroEvalModel("claude-3-haiku-20240307", "claude-3-haiku", 0, LatencyModel(500, 120)),
    ZeroEvalModel("Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b", 1, LatencyModel(450, 60)),
    ZeroEvalModel("Qwen2-72B-Instruct", "qwen2-72b", 1, LatencyModel(500, 50)),
    ZeroEvalModel("gemini-1.5-pro", "gemini-1.5-pro", 1, LatencyModel(800, 60)),
    ZeroEvalModel("gpt-4o-2024-08-06", "gpt-4o-0806", 1, LatencyModel(450, 80)),
    ZeroEvalModel("claude-3-5-sonnet-20240620", "claude-3.5-sonnet", 1, LatencyModel(900, 70)),
    ZeroEvalModel("gpt-4o-2024-05-13", "gpt-4o-0513", 1, LatencyModel(450, 80)),
)


def route() -> RouteConfig:
    """The recorded route: two tiers; θ = 2/3 is only the recording's default (replay and search
    try others)."""
    tiers = tuple(
        tuple(m.name for m in MODELS if m.tier == tier) for tier in sorted({m.tier for m in MODELS})
    )
    return RouteConfig(
        task="number", threshold=2 / 3, tiers=tiers, max_tokens=4096, deadline_s=120.0
    )


def convert_gsm8k_zeroeval(src: Path) -> Recording:
    """The recording of ``src`` (a folder holding ``answers.jsonl`` and ``models.json``)."""
    prices = orjson.loads((src / MODELS_FILE).read_bytes())["models"]
    spec = route().spec
    endpoints: dict[str, EndpointInfo] = {}
    for model in MODELS:
        if model.source not in prices:
            raise ValueError(f"{src / MODELS_FILE}: no price for {model.source!r}")
        price = prices[model.source]
        endpoints[model.name] = EndpointInfo(
            name=model.name,
            tier=model.tier,
            kind="openai",
            model=str(price.get("generator", model.source)),
            usd_per_mtok_in=float(price["usd_per_mtok_in"]),
            usd_per_mtok_out=float(price["usd_per_mtok_out"]),
            gpu=None,
            gpus=1,
            gpu_hour_usd=None,
        )
    header = RecordingHeader(
        ROUTE_NAME, route().recorded(), endpoints, logprobs=False,
        created_at=CREATED_AT,
    )
    recording = Recording(header)
    with (src / ANSWERS_FILE).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    recording.examples.append(_example(orjson.loads(line), endpoints, spec))
                except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
                    raise ValueError(f"{src / ANSWERS_FILE}:{number}: {exc!r}") from None
    return recording


def _example(raw: dict[str, Any], endpoints: dict[str, EndpointInfo], spec: Any) -> RecordedExample:
    prompt = str(raw["prompt"])
    prompt_tokens = estimate_tokens(prompt)
    outputs = raw["outputs"]
    calls: dict[str, RecordedCall] = {}
    for model in MODELS:
        text = outputs.get(model.source)
        info = endpoints[model.name]
        price = Price(info.usd_per_mtok_in, info.usd_per_mtok_out)
        status: CallStatus
        if not isinstance(text, str) or not text:
            status, text, answer = "error", None, None
            cost = 0.0
        else:
            answer = normalise(text, spec)
            status = "ok" if answer is not None else "unparsable"
            cost = price_call(price, prompt_tokens, estimate_tokens(text), 0.0).usd
        calls[model.name] = RecordedCall(
            tier=model.tier,
            status=status,
            text=text,
            answer=answer,
            tokens_in=None,
            tokens_out=None,
            latency_ms=model.latency.latency_ms(text),
            # Informative only (a replay prices calls again), as ``coe eval record`` rounds it.
            cost_usd=float(f"{cost:.4g}"),
            gpu_seconds=0.0,
            logprobs=None,
            error="no output recorded" if status == "error" else None,
        )
    gold = str(raw["gold"])
    return RecordedExample(
        id=str(raw["id"]),
        label=normalise(gold, spec) or gold,
        messages=({"role": "user", "content": prompt},),
        calls=calls,
    )


def recording_bytes(recording: Recording) -> bytes:
    """The recording's RUN.jsonl lines: its header, then one line per example."""
    lines = [orjson.dumps(recording.header.to_json())]
    lines += [orjson.dumps(example.to_json()) for example in recording.examples]
    return b"\n".join(lines) + b"\n"


def write_recording(recording: Recording, out: Path) -> None:
    """Write RUN.jsonl; gzipped, with a fixed header (no name, no time), when ``out`` ends in
    ``.gz``."""
    data = recording_bytes(recording)
    if out.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
            gz.write(data)
        data = buffer.getvalue()
    out.write_bytes(data)
