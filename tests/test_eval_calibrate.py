"""``coe eval calibrate``: θ from a target agreement, on a recording where the answer is known and
on the bundled GSM8K recording (issue 13's acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.billing import Biller
from gateway.cli import main
from gateway.config import parse_settings
from gateway.evaluation.calibrate import calibrate, calibration_json
from gateway.evaluation.recording import header_for_route
from gateway.evaluation.replay import CascadeConfig, Replayer
from policies.target import choose_threshold
from providers.base import CallRecord
from providers.recording import RecordedCall, RecordedExample, Recording, read_recording

BUNDLED = Path(__file__).resolve().parents[1] / "gateway" / "demo_data" / "gsm8k-zeroeval.jsonl.gz"
CHEAP_TIERS = "gemini-1.5-flash,gpt-4o-mini,llama-3.1-8b;gpt-4o-0806"
TIERS = [["a", "b", "c"], ["top"]]


def known(examples: int = 600) -> Recording:
    """Tier 0 a, b, c; top tier one endpoint, always right. Two examples in three are unanimous
    and right (3/3: agreement 1); the third has a, b agree against c, right 70 % of the time (2/3:
    agreement 0.7), so θ = 1 is supported up to a target near 0.99 and θ = 2/3 only up to ~0.65."""
    names = [name for tier in TIERS for name in tier]
    endpoints = [
        {"name": n, "kind": "python", "function": "builtins:str",
         "usd_per_mtok_in": 0.1 if n != "top" else 5.0, "usd_per_mtok_out": 0.3}
        for n in names
    ]
    settings = parse_settings({
        "endpoints": endpoints, "routes": {"r": {"task": "number", "tiers": TIERS}},
    })
    header = header_for_route(settings, "r", logprobs=False, created_at="2026-01-01T00:00:00+00:00")
    biller = Biller(settings)
    recording = Recording(header)
    for index in range(examples):
        gold = index % 4
        wrong = (gold + 1) % 4
        if index % 3 < 2:
            answers = {"a": gold, "b": gold, "c": gold}
        else:
            majority = gold if (index // 6) % 10 < 7 else wrong
            answers = {"a": majority, "b": majority, "c": (gold + 2) % 4}
        answers["top"] = gold
        calls = {}
        for slot, name in enumerate(names):
            record = CallRecord(
                endpoint=name, status="ok", text=str(answers[name]), tokens_in=50, tokens_out=3,
                latency_ms=10.0 + slot, tier=header.endpoints[name].tier,
            )
            record.prompt_chars = 200
            record.cost_usd = biller.price(record).usd
            calls[name] = RecordedCall.from_record(record)
        messages = ({"role": "user", "content": f"question {index}"},)
        recording.examples.append(RecordedExample(f"e{index}", str(gold), messages, calls))
    return recording


@pytest.fixture(scope="module")
def recording() -> Recording:
    return known()


def test_the_known_theta_is_picked(recording: Recording) -> None:
    strict = calibrate(recording, target=0.98, split=True)
    assert strict.choice.theta == 1.0 and not strict.choice.fallback
    held = strict.held_out
    assert held.accepted_agreement == 1.0 and strict.meets_target
    assert held.accepted == round(held.examples * 2 / 3)
    assert held.row.accuracy == 1.0

    loose = calibrate(recording, target=0.6, split=True)
    assert loose.choice.theta == 0.5 and not loose.choice.fallback
    assert loose.held_out.accepted == loose.held_out.examples
    assert loose.meets_target
    assert loose.held_out.accepted_agreement == pytest.approx(0.9, abs=0.01)
    # Cheaper than the strict choice, and than the top tier alone.
    assert loose.held_out.row.cost_per_request_usd < held.row.cost_per_request_usd
    assert held.row.cost_per_request_usd < held.top_only.cost_per_request_usd

    unreachable = calibrate(recording, target=0.999, split=True)
    assert unreachable.choice.fallback and unreachable.choice.theta == 1.0


def test_the_evidence_is_a_census_of_the_choosing_half(recording: Recording) -> None:
    result = calibrate(recording, target=0.9, split=True, thresholds=[2 / 3, 1.0])
    patterns = {row["votes"]: row for row in calibration_json(result, "x")["choosing"]["patterns"]}
    assert set(patterns) == {"3/3", "2/3"}
    assert {row["kind"] for row in patterns.values()} == {"census"}
    assert patterns["3/3"]["audited"] + patterns["2/3"]["audited"] == 300
    assert patterns["3/3"]["agreement"] == 1.0
    assert patterns["2/3"]["agreement"] == pytest.approx(0.7, abs=0.02)
    assert patterns["2/3"]["traffic_share"] == pytest.approx(1 / 3, abs=0.01)


def test_the_choice_is_the_live_controllers_rule_on_the_census(recording: Recording) -> None:
    """The same function judges live audit rows (gateway.audit) and this census."""
    result = calibrate(recording, target=0.6, min_samples=60, split=True)
    rows = result.choosing.rows()
    assert {(row.kind, row.threshold) for row in rows} == {("census", None)}
    assert result.choice == choose_threshold(result.thresholds, rows, 0.6, 0.95, 60,
                                             tier_sizes={0: 3})


def test_a_larger_min_samples_holds_back_the_looser_theta(recording: Recording) -> None:
    result = calibrate(recording, target=0.6, min_samples=150, split=True)
    assert result.choice.theta == 1.0  # 2/3 has about 100 audited of 300


def test_tiers_are_checked(recording: Recording) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        calibrate(recording, target=0.9, tiers=[["a", "zz"], ["top"]])
    with pytest.raises(ValueError, match="two or more"):
        calibrate(recording, target=0.9, tiers=[["a", "b"]])


def test_the_command_prints_table_and_json(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    _write(recording, path)
    assert main(["eval", "calibrate", str(path), "--target-agreement", "0.98", "--split"]) == 0
    out = capsys.readouterr().out
    assert "picked θ = 1" in out and "meets the target" in out
    assert main(["eval", "calibrate", str(path), "--target-agreement", "0.6", "--split",
                 "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["choice"]["threshold"] == "1/2" and report["held_out"]["meets_target"]


def test_the_command_takes_the_route_from_a_toml(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    _write(recording, path)
    toml = tmp_path / "route.toml"
    toml.write_text(
        '[routes.r]\ntiers = [["a", "b", "c"], ["top"]]\nthresholds = ["2/3", 1]\n'
        "target_agreement = 0.6\nconfidence = 0.9\nmin_samples = 20\n"
    )
    assert main(["eval", "calibrate", str(path), "--route-toml", str(toml), "--format",
                 "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["thresholds"] == ["1", "2/3"]
    assert report["choice"]["threshold"] == "2/3"
    assert (report["target_agreement"], report["confidence"], report["min_samples"]) == (
        0.6, 0.9, 20)
    # No target on the command line and none in a route: a usage error.
    assert main(["eval", "calibrate", str(path), "--tiers", "a,b;top"]) == 2


def _write(recording: Recording, path: Path) -> None:
    lines = [recording.header.to_json(), *(example.to_json() for example in recording.examples)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_gsm8k_acceptance_the_picked_theta_meets_the_target_held_out() -> None:
    """Issue 13: on the GSM8K recording, calibrate picks a θ whose held-out agreement meets the
    target; the held-out figures are the replay's."""
    recording = read_recording(BUNDLED)
    tiers = [tier.split(",") for tier in CHEAP_TIERS.split(";")]
    result = calibrate(recording, target=0.98, confidence=0.95, split=True, tiers=tiers)
    assert not result.choice.fallback and result.choice.theta == 1.0
    assert result.meets_target
    agreement = result.held_out.accepted_agreement
    assert agreement is not None and agreement >= 0.98
    # Accuracy and cost as `coe eval replay` computes them, on the held-out half.
    odd = Recording(recording.header)
    odd.examples.extend(recording.examples[1::2])
    config = CascadeConfig("c", "coe", (tuple(tiers[0]), tuple(tiers[1])), 1.0)
    replayed = Replayer(odd).evaluate(config)
    assert result.held_out.row.accuracy == replayed.accuracy
    assert result.held_out.row.cost_per_request_usd == pytest.approx(
        replayed.cost_per_request_usd, rel=1e-12
    )
