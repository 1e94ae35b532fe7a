"""The gsm8k-zeroeval converter: recorded LLM answers to GSM8K as a full-information recording."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from gateway.commands import data as data_command
from gateway.evaluation.datasets import RECORDED_SETS
from gateway.evaluation.replay import CascadeConfig, Replayer
from gateway.evaluation.zeroeval import (
    BUNDLED_NAME,
    MODELS,
    convert_gsm8k_zeroeval,
    recording_bytes,
    write_recording,
)
from providers.errors import RecordingError
from providers.recording import read_recording

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k-zeroeval"
BUNDLED = Path(__file__).resolve().parents[1] / "gateway" / "demo_data" / BUNDLED_NAME


def _fixture(folder: Path) -> Path:
    """A 3-question copy of the data: one all right, one a model leaves unreadable, one a model
    did not answer."""
    prices = {
        m.source: {"usd_per_mtok_in": 1.0 + i, "usd_per_mtok_out": 2.0 + i, "generator": f"g/{i}"}
        for i, m in enumerate(MODELS)
    }
    (folder / "models.json").write_text(json.dumps({"models": prices}))
    answer = '```json\n{"reasoning": "2 + 2 = 4", "answer": "%s"}\n```'
    lines = []
    for index, gold in enumerate(("4", "1,000", "7")):
        outputs = {m.source: answer % gold.replace(",", "") for m in MODELS}
        if index == 1:
            outputs[MODELS[0].source] = "I cannot say."
        if index == 2:
            del outputs[MODELS[-1].source]
        lines.append({"id": f"q{index}", "question": "?", "prompt": "x" * 40, "gold": gold,
                      "outputs": outputs})
    (folder / "answers.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_the_converter_writes_two_tiers_of_six_with_prices_and_answers(tmp_path: Path) -> None:
    recording = convert_gsm8k_zeroeval(_fixture(tmp_path))
    header = recording.header
    assert header.route_name == "gsm8k" and header.route["task"] == "number"
    assert header.tiers == (
        ("gemini-1.5-flash", "llama-3-8b", "llama-3.1-8b", "gemma-2-9b", "gpt-4o-mini",
         "claude-3-haiku"),
        ("llama-3.1-70b", "qwen2-72b", "gemini-1.5-pro", "gpt-4o-0806", "claude-3.5-sonnet",
         "gpt-4o-0513"),
    )
    first = header.endpoints["gemini-1.5-flash"]
    assert (first.usd_per_mtok_in, first.usd_per_mtok_out, first.model) == (1.0, 2.0, "g/0")
    assert first.gpu is None and first.gpu_hour_usd is None
    q0, q1, q2 = recording.examples
    assert q0.messages == ({"role": "user", "content": "x" * 40},)
    assert [q0.label, q1.label, q2.label] == ["4", "1000", "7"]
    call = q0.calls["llama-3-8b"]
    assert (call.status, call.answer, call.tokens_in, call.tokens_out) == ("ok", "4", None, None)
    assert call.logprobs is None and call.gpu_seconds == 0.0
    # The latency model: time to first token + estimated output tokens / output speed.
    model = MODELS[1].latency
    tokens = (len(call.text or "") + 2) // 4
    assert call.latency_ms == pytest.approx(model.ttft_ms + tokens * 1000 / model.tokens_per_s)
    assert q1.calls["gemini-1.5-flash"].status == "unparsable"
    assert q1.calls["gemini-1.5-flash"].answer is None
    missing = q2.calls["gpt-4o-0513"]
    assert (missing.status, missing.text, missing.cost_usd) == ("error", None, 0.0)


def test_costs_are_estimated_from_text_lengths_when_replayed(tmp_path: Path) -> None:
    recording = convert_gsm8k_zeroeval(_fixture(tmp_path))
    outcome = Replayer(recording).simulate(
        0, CascadeConfig("one", "single", (("gemini-1.5-flash",),), wait_for_all=True)
    )
    (call,) = outcome.calls
    assert call.cost_estimated
    text = recording.examples[0].calls["gemini-1.5-flash"].text or ""
    assert call.cost_usd == pytest.approx((10 * 1.0 + (len(text) + 2) // 4 * 2.0) / 1e6)


def test_a_gzipped_recording_reads_back_the_same(tmp_path: Path) -> None:
    recording = convert_gsm8k_zeroeval(_fixture(tmp_path))
    plain, packed = tmp_path / "run.jsonl", tmp_path / "run.jsonl.gz"
    write_recording(recording, plain)
    write_recording(recording, packed)
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert read_recording(packed).examples == read_recording(plain).examples
    # Deterministic: no file name or time in the gzip header.
    write_recording(recording, tmp_path / "again.jsonl.gz")
    assert (tmp_path / "again.jsonl.gz").read_bytes() == packed.read_bytes()
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(RecordingError, match="not a gzipped recording"):
        read_recording(tmp_path / "bad.jsonl.gz")


def test_coe_data_convert_writes_the_recording(tmp_path: Path) -> None:
    src = _fixture(tmp_path)
    out = tmp_path / "out.jsonl"
    args = argparse.Namespace(
        name="gsm8k-zeroeval", out=out, data_dir=None, src=src, limit=2
    )
    assert data_command.run_convert(args) == 0
    assert len(read_recording(out).examples) == 2
    assert "gsm8k-zeroeval" in RECORDED_SETS


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data/gsm8k-zeroeval here")
def test_converting_the_shared_data_reproduces_the_bundled_recording() -> None:
    converted = recording_bytes(convert_gsm8k_zeroeval(SHARED))
    assert converted == gzip.decompress(BUNDLED.read_bytes())


def test_the_bundled_recording_reads_with_every_call() -> None:
    recording = read_recording(BUNDLED)
    assert len(recording.examples) == 1319
    assert all(len(example.calls) == 12 for example in recording.examples)
