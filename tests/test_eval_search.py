"""``coe eval search``: its figures equal the replay's; it finds a route and writes its config."""

from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path

import pytest

from gateway.billing import Biller
from gateway.config import load_settings, parse_settings
from gateway.evaluation.recording import header_for_route
from gateway.evaluation.replay import CascadeConfig, Replayer, Row
from gateway.evaluation.search import (
    Searcher,
    SearchSpace,
    mark_pareto,
    run_search,
    search_configs,
    single_configs,
)
from gateway.evaluation.search_output import search_json, search_toml
from policies.logprobs import TokenLogprob
from providers.base import CallRecord
from providers.recording import RecordedCall, RecordedExample, Recording, read_recording

BUNDLED = Path(__file__).resolve().parents[1] / "gateway" / "demo_data" / "gsm8k-zeroeval.jsonl.gz"
TIERS = [["a", "b", "c", "d"], ["m"], ["x", "y"]]


def generated(seed: int, examples: int = 60) -> Recording:
    """Answers 0–3 or none (unreadable text, failed calls), latencies from a few values (ties),
    logprobs on some endpoints (plurality ties by mean logprob), one GPU-priced endpoint."""
    rng = random.Random(seed)
    names = [name for tier in TIERS for name in tier]
    endpoints = [
        {"name": n, "kind": "python", "function": "builtins:str",
         "usd_per_mtok_in": 0.1 * (i + 1), "usd_per_mtok_out": 0.3 * (i + 1)}
        for i, n in enumerate(names)
    ]
    endpoints[1] = {**endpoints[1], "gpu": "T4"}
    settings = parse_settings({
        "endpoints": endpoints,
        "pricing": {"gpu_hour_usd": {"T4": 0.5}},
        "routes": {"r": {"task": "number", "tiers": TIERS}},
    })
    header = header_for_route(settings, "r", logprobs=True, created_at="2026-01-01T00:00:00+00:00")
    biller = Biller(settings)
    recording = Recording(header)
    for index in range(examples):
        gold = rng.randrange(4)
        calls = {}
        for name in names:
            roll = rng.random()
            status, text = "ok", str(gold if rng.random() < 0.6 else rng.randrange(4))
            if roll < 0.08:
                status, text = "error", None
            elif roll < 0.15:
                text = "no idea"
            record = CallRecord(
                endpoint=name, status=status, text=text,  # type: ignore[arg-type]
                tokens_in=rng.choice([None, 50]) if text else None,
                tokens_out=rng.choice([None, 3]) if text else None,
                latency_ms=float(rng.choice([10, 20, 20, 30, 45])),
                tier=header.endpoints[name].tier,
                logprobs=(TokenLogprob(text, -rng.random()),) if text and name in "bcy" else None,
                gpu_seconds=rng.random() / 10,
            )
            if text == "no idea":
                record.status = "unparsable"
            record.prompt_chars = 40 + index
            record.cost_usd = biller.price(record).usd
            calls[name] = RecordedCall.from_record(record)
        messages = ({"role": "user", "content": "q" * (40 + index)},)
        recording.examples.append(RecordedExample(f"e{index}", str(gold), messages, calls))
    return recording


def same(vector: Row, replay: Row) -> None:
    name = vector.config.name
    assert vector.accuracy == replay.accuracy, name
    assert vector.exit_fractions == replay.exit_fractions, name
    assert math.isclose(vector.cost_per_request_usd, replay.cost_per_request_usd, rel_tol=1e-12)
    assert math.isclose(vector.latency_mean_ms, replay.latency_mean_ms, rel_tol=1e-12)
    assert math.isclose(vector.latency_p50_ms, replay.latency_p50_ms, rel_tol=1e-12)
    assert math.isclose(vector.latency_p95_ms, replay.latency_p95_ms, rel_tol=1e-12)
    assert vector.hourly_usd == replay.hourly_usd


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_search_figures_equal_the_replay_on_generated_recordings(seed: int) -> None:
    recording = generated(seed)
    space = SearchSpace(thresholds=(0.3, 0.5, 2 / 3, 0.75, 1.0), top_ensembles=True, middle=True)
    costs = {name: 0.0 for tier in TIERS for name in tier}
    configs = search_configs(recording.header, space, costs | {"x": 1.0, "y": 1.0})
    configs = random.Random(seed).sample(configs, 120) + single_configs(recording.header)
    configs.append(CascadeConfig("whole", "coe", recording.header.tiers, 0.5))
    configs.append(CascadeConfig("ens", "ensemble", (("a", "b", "c", "d"),), wait_for_all=True))
    searcher, replayer = Searcher(recording), Replayer(recording)
    for config in configs:
        same(searcher.evaluate(config), replayer.evaluate(config))
    delayed = configs[-1]
    same(searcher.evaluate(delayed, 100.0), replayer.evaluate(delayed, 100.0))


@pytest.mark.skipif(not BUNDLED.is_file(), reason="no bundled GSM8K recording")
def test_search_figures_equal_the_replay_on_100_gsm8k_questions() -> None:
    recording = read_recording(BUNDLED)
    recording.examples = recording.examples[:100]
    space = SearchSpace(top_ensembles=True, middle=True)
    costs = {name: 0.0 for name in recording.endpoint_names}
    configs = search_configs(recording.header, space, costs)
    configs = random.Random(7).sample(configs, 80) + single_configs(recording.header)
    searcher, replayer = Searcher(recording), Replayer(recording)
    for config in configs:
        same(searcher.evaluate(config), replayer.evaluate(config))


def test_the_pareto_marks_equal_the_replays_definition() -> None:
    recording = generated(4, examples=30)
    searcher = Searcher(recording)
    rows = [searcher.evaluate(c) for c in search_configs(recording.header, SearchSpace())]
    marked = mark_pareto(rows)
    for row in marked:
        dominated = any(
            o.accuracy >= row.accuracy and o.cost_per_request_usd <= row.cost_per_request_usd
            and (o.accuracy > row.accuracy or o.cost_per_request_usd < row.cost_per_request_usd)
            for o in rows
        )
        assert row.pareto is not dominated


def test_the_search_recommends_a_route_and_writes_a_valid_config(tmp_path: Path) -> None:
    recording = generated(5, examples=80)
    report = run_search(recording, split=True)
    assert report.recommended.accuracy >= report.best_single.accuracy - 1e-12
    assert report.recommended.cost_per_request_usd <= report.best_single.cost_per_request_usd
    assert report.held_out is not None and report.held_out[0].config == report.recommended.config
    assert report.examples == 40 and report.held_out_examples == 40
    config = tmp_path / "route.toml"
    config.write_text(search_toml(report, recording.header, "run.jsonl"))
    tomllib.loads(config.read_text())
    settings = load_settings(config)
    assert settings.routes["r"].tiers == report.recommended.config.tiers
    rows = search_json(report)
    chosen = [row for row in rows if row["recommended"]]
    assert [row["split"] for row in chosen] == ["choose", "held-out"]
    assert all({"tiers", "pareto", "cost_estimated", "wait_for_all"} <= set(row) for row in rows)
    cheap = run_search(recording, max_cost=report.best_single.cost_per_request_usd / 2)
    assert cheap.recommended.cost_per_request_usd <= report.best_single.cost_per_request_usd / 2


def test_search_refuses_unknown_candidates_and_other_policies() -> None:
    recording = generated(6, examples=5)
    with pytest.raises(ValueError, match="unknown endpoint"):
        search_configs(recording.header, SearchSpace(candidates=("zz",)))
    with pytest.raises(ValueError, match="vote policy"):
        Searcher(recording).evaluate(
            CascadeConfig("c", "confidence", (("a",), ("x",)), 0.5, "confidence")
        )
