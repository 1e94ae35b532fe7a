"""Replay on hand-built recordings whose right answers were worked out by hand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.evaluation.replay import (
    CascadeConfig,
    Replayer,
    build_report,
    fraction_text,
)
from gateway.evaluation.tables import recommended_toml, report_json
from providers.errors import RecordingError
from providers.recording import Recording, read_recording
from tests.eval_recordings import Answer, build_recording, route_settings, write_recording

PROMPT = "x" * 40  # 40 characters: a cancelled call is billed an estimated 10 prompt tokens
SMALL = (1.0, 2.0)  # $ per million tokens in, out
LARGE = (10.0, 30.0)
OK_SMALL = (100 * 1.0 + 1 * 2.0) / 1e6  # 100 tokens in, 1 out
OK_LARGE = (100 * 10.0 + 1 * 30.0) / 1e6
CANCELLED_SMALL = 10 * 1.0 / 1e6
# The bundled GSM8K recording: twelve real models' answers, no token counts.
ZEROEVAL = Path(__file__).parents[1] / "gateway" / "demo_data" / "gsm8k-zeroeval.jsonl.gz"


def vote_recording() -> Recording:
    settings = route_settings(
        [["a", "b", "c"], ["big"]],
        prices={"a": SMALL, "b": SMALL, "c": SMALL, "big": LARGE},
    )

    def row(a: Answer, b: Answer, c: Answer, big: str) -> dict[str, Answer]:
        return {"a": a, "b": b, "c": c, "big": Answer(big, 100)}

    pos, neg = "positive", "negative"
    rows = [
        # a and b agree at 20 ms: tier 0 accepts, c (30 ms) is cancelled.
        ("1", PROMPT, pos, row(Answer(pos, 10), Answer(pos, 20), Answer(neg, 30), pos)),
        # Agreement only with the third answer.
        ("2", PROMPT, neg, row(Answer(pos, 10), Answer(neg, 20), Answer(neg, 30), pos)),
        # c is unparsable: 1-1, nothing pending → escalate; big answers.
        ("3", PROMPT, neg, row(Answer(pos, 10), Answer(neg, 20), Answer("maybe", 30), neg)),
        # a fails (no usage, no charge): 1-1 → escalate.
        (
            "4",
            PROMPT,
            pos,
            row(Answer(None, 5, status="error"), Answer(neg, 20), Answer(pos, 30), pos),
        ),
    ]
    return build_recording(settings, rows)


def coe(theta: float, *, wait_for_all: bool = False) -> CascadeConfig:
    return CascadeConfig("coe", "coe", (("a", "b", "c"), ("big",)), theta, "vote", wait_for_all)


def test_early_quorum_decisions_exits_and_costs() -> None:
    replayer = Replayer(vote_recording())
    outcomes = [replayer.simulate(i, coe(2 / 3)) for i in range(4)]
    assert [o.answer for o in outcomes] == ["positive", "negative", "negative", "positive"]
    assert [o.tier for o in outcomes] == [0, 0, 1, 1]
    assert [o.decision for o in outcomes] == ["agreed", "agreed", "escalated", "escalated"]
    assert [c.status for c in outcomes[0].calls] == ["ok", "ok", "cancelled"]
    assert outcomes[0].cost_usd == pytest.approx(2 * OK_SMALL + CANCELLED_SMALL)
    assert outcomes[1].cost_usd == pytest.approx(3 * OK_SMALL)
    assert outcomes[2].cost_usd == pytest.approx(3 * OK_SMALL + OK_LARGE)
    assert outcomes[3].cost_usd == pytest.approx(2 * OK_SMALL + OK_LARGE)
    assert [o.latency_ms for o in outcomes] == [20, 30, 130, 130]


def test_cascade_row_accuracy_exits_and_mean_cost() -> None:
    row = Replayer(vote_recording()).evaluate(coe(2 / 3))
    assert row.accuracy == 1.0
    assert row.exit_fractions == (0.5, 0.5)
    expected = (2 * OK_SMALL + CANCELLED_SMALL) + 3 * OK_SMALL + 2 * (2.5 * OK_SMALL + OK_LARGE)
    assert row.cost_per_request_usd == pytest.approx(expected / 4)
    assert row.latency_p50_ms == 80.0  # between 30 and 130
    assert row.hourly_usd is None  # per-token prices: no $/h column


def test_wait_for_all_pays_every_call_and_waits_for_the_slowest() -> None:
    replayer = Replayer(vote_recording())
    outcome = replayer.simulate(0, coe(2 / 3, wait_for_all=True))
    assert outcome.answer == "positive"
    assert [c.status for c in outcome.calls] == ["ok", "ok", "ok"]
    assert outcome.cost_usd == pytest.approx(3 * OK_SMALL)
    assert outcome.latency_ms == 30


@pytest.mark.parametrize(
    ("p_positive", "p_negative", "answer"),
    [(None, None, "positive"), (0.3, 0.9, "negative"), (0.9, 0.3, "positive")],
)
def test_wait_for_all_breaks_a_tie_at_half_as_the_engine_does(
    p_positive: float | None, p_negative: float | None, answer: str
) -> None:
    """θ = 1/2, 1-1: both labels reach θ; the tier's plurality picks (mean logprob, else the
    configured order), not whichever answered first ("negative", at 5 ms)."""
    settings = route_settings([["a", "b"]], prices={"a": SMALL, "b": SMALL})
    answers = {
        "a": Answer("positive", 20, p=p_positive),
        "b": Answer("negative", 5, p=p_negative),
    }
    replayer = Replayer(build_recording(settings, [("1", PROMPT, answer, answers)]))
    config = CascadeConfig("coe", "coe", (("a", "b"),), 0.5, "vote", wait_for_all=True)
    outcome = replayer.simulate(0, config)
    assert (outcome.answer, outcome.decision, outcome.agreement) == (answer, "agreed", 0.5)
    assert [c.status for c in outcome.calls] == ["ok", "ok"]


def test_unanimity_escalates_any_disagreement() -> None:
    row = Replayer(vote_recording()).evaluate(coe(1.0))
    # Example 1 is 2-1 now, so it escalates too: big says positive, right.
    assert row.exit_fractions == (0.0, 1.0)
    assert row.accuracy == 0.75  # example 2: big says positive, wrong


def test_single_models_and_whole_tier_ensemble() -> None:
    report = build_report(vote_recording())
    singles = {r.config.name: r.accuracy for r in report.rows if r.config.kind == "single"}
    assert singles == {"a": 0.25, "b": 0.75, "c": 0.5, "big": 0.75}
    ensemble = next(r for r in report.rows if r.config.kind == "ensemble")
    # Plurality of all three: pos, neg, neg (tie 1-1 → first voter's label), neg-vs-pos tie.
    assert ensemble.accuracy == 0.5
    assert ensemble.exit_fractions is None
    single_b = next(r for r in report.rows if r.config.name == "b")
    assert single_b.cost_per_request_usd == pytest.approx(OK_SMALL)


def test_best_single_and_recommendation_is_cheapest_at_least_as_accurate() -> None:
    report = build_report(vote_recording())
    assert report.best_single.config.name == "b"  # as accurate as big, and cheaper
    assert report.recommended.accuracy >= report.best_single.accuracy
    cheaper_and_as_good = [
        r
        for r in report.rows
        if r.accuracy >= report.best_single.accuracy
        and r.cost_per_request_usd < report.recommended.cost_per_request_usd
    ]
    assert cheaper_and_as_good == []


def test_pareto_marks_exactly_the_undominated_rows() -> None:
    report = build_report(vote_recording())
    for row in report.rows:
        beaten = any(
            o.accuracy >= row.accuracy
            and o.cost_per_request_usd <= row.cost_per_request_usd
            and (o.accuracy, -o.cost_per_request_usd) != (row.accuracy, -row.cost_per_request_usd)
            for o in report.rows
        )
        assert row.pareto is not beaten, row.config.name


def test_default_thresholds_give_early_and_wait_all_rows() -> None:
    names = [r.config.name for r in build_report(vote_recording()).rows if r.config.kind == "coe"]
    assert names == [
        "coe θ=1/2", "coe θ=1/2 wait-all",
        "coe θ=2/3", "coe θ=2/3 wait-all",
        "coe θ=1", "coe θ=1 wait-all",
    ]


def test_json_rows_have_the_contract_shape() -> None:
    rows = report_json(build_report(vote_recording()))
    keys = {"config", "kind", "threshold", "accuracy", "cost_per_request_usd", "latency_p50_ms",
            "exit_fractions", "wait_for_all", "cost_estimated"}
    assert all(set(row) == keys for row in rows)
    # The hand-built recording reports usage for every answer: nothing is estimated.
    assert not any(row["cost_estimated"] for row in rows)
    protocols = {row["config"]: row["wait_for_all"] for row in rows}
    assert protocols["coe θ=2/3"] is False
    assert protocols["coe θ=2/3 wait-all"] is True
    single = next(r for r in rows if r["kind"] == "single")
    assert single["threshold"] is None and single["exit_fractions"] is None
    cascade = next(r for r in rows if r["config"] == "coe θ=2/3")
    assert cascade["threshold"] == 0.667
    assert cascade["exit_fractions"] == [0.5, 0.5]


def test_rows_of_a_recording_without_token_counts_say_their_costs_are_estimated() -> None:
    recording = read_recording(ZEROEVAL)

    rows = report_json(build_report(replace(recording, examples=recording.examples[:20])))

    assert rows and all(row["cost_estimated"] for row in rows)


def test_tier_delay_is_added_to_tiers_after_the_first() -> None:
    report = build_report(vote_recording(), tier_delays_ms=[100.0])
    delayed = next(r for r in report.delayed[100.0] if r.config.name == "coe θ=2/3")
    assert delayed.latency_mean_ms == pytest.approx((20 + 30 + 230 + 230) / 4)
    single_big = next(r for r in report.delayed[100.0] if r.config.name == "big")
    assert single_big.latency_mean_ms == 200
    rows = report_json(report)
    assert {r.get("tier_delay_ms") for r in rows} == {None, 100.0}


def test_confidence_cascade_defers_below_the_threshold() -> None:
    settings = route_settings([["small"], ["big"]], prices={"small": SMALL, "big": LARGE})
    pos, neg = "positive", "negative"
    rows = [
        ("1", PROMPT, pos, {"small": Answer(pos, 10, p=0.95), "big": Answer(pos, 100, p=0.99)}),
        ("2", PROMPT, neg, {"small": Answer(pos, 10, p=0.6), "big": Answer(neg, 100, p=0.9)}),
        ("3", PROMPT, neg, {"small": Answer(neg, 10, p=0.85), "big": Answer(neg, 100, p=0.9)}),
        ("4", PROMPT, pos, {"small": Answer(neg, 10, p=0.7), "big": Answer(neg, 100, p=0.9)}),
    ]
    replayer = Replayer(build_recording(settings, rows))
    config = CascadeConfig("c", "confidence", (("small",), ("big",)), 0.8, "confidence")
    row = replayer.evaluate(config)
    assert row.exit_fractions == (0.5, 0.5)  # 0.95 and 0.85 stop at small
    assert row.accuracy == 0.75  # example 4: big is confidently wrong
    assert row.cost_per_request_usd == pytest.approx(OK_SMALL + OK_LARGE / 2)
    report = build_report(build_recording(settings, rows), confidence_grid=[0.8, 0.9])
    names = [r.config.name for r in report.rows if r.config.kind == "confidence"]
    assert names == [
        "confidence p≥0.8", "confidence chain p≥0.8", "confidence p≥0.9", "confidence chain p≥0.9",
    ]


def test_table_2_blended_dollars_per_hour() -> None:
    """The seed paper's Table 2: exits 0.73/0.09/0.08/0.10 on V100/A6000/A100/H100 → $0.79/h,
    against $2.49/h for the H100 tier alone."""
    gpus = {"v100": "V100", "a6000": "A6000", "a100": "A100", "h100": "H100"}
    settings = route_settings([["v100"], ["a6000"], ["a100"], ["h100"]], gpus=gpus)
    rows = []
    for index in range(100):
        # The first tiers that cannot answer ("??" is unparsable) defer to the next.
        deferring = 0 if index < 73 else 1 if index < 82 else 2 if index < 90 else 3
        answers = {
            name: Answer("??" if tier < deferring else "positive", 10)
            for tier, name in enumerate(gpus)
        }
        rows.append((str(index), PROMPT, "positive", answers))
    report = build_report(build_recording(settings, rows))
    cascade = next(r for r in report.rows if r.config.name == "coe θ=2/3")
    assert cascade.exit_fractions == pytest.approx((0.73, 0.09, 0.08, 0.10))
    assert cascade.hourly_usd == pytest.approx(0.7892)
    assert round(cascade.hourly_usd or 0, 2) == 0.79
    top = next(r for r in report.rows if r.config.name == "h100")
    assert top.hourly_usd == 2.49
    # Per request, GPU time is charged: 10 ms on each GPU the request reached.
    assert top.cost_per_request_usd == pytest.approx(0.010 * 2.49 / 3600)


def test_recommended_config_is_valid_toml_for_the_route() -> None:
    import tomllib

    from gateway.config import RouteConfig

    recording = vote_recording()
    report = build_report(recording)
    text = recommended_toml(report, recording.header)
    route = RouteConfig.model_validate(tomllib.loads(text)["routes"]["sentiment"])
    assert route.tiers == report.recommended.config.tiers


def test_recording_round_trip_and_cut_short_last_line(tmp_path: Path) -> None:
    recording = vote_recording()
    path = write_recording(recording, tmp_path / "run.jsonl")
    assert read_recording(path).examples == recording.examples
    with path.open("ab") as handle:
        handle.write(b'{"id": "5", "label": "pos')
    again = read_recording(path)
    assert again.truncated_tail and len(again.examples) == 4


def test_a_bad_line_inside_a_recording_names_its_line(tmp_path: Path) -> None:
    path = write_recording(vote_recording(), tmp_path / "run.jsonl")
    lines = path.read_bytes().splitlines()
    lines[2] = b'{"id": 2}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordingError, match=r"run.jsonl:3:"):
        read_recording(path)


@pytest.mark.parametrize(
    ("theta", "text"), [(0.5, "1/2"), (2 / 3, "2/3"), (0.667, "2/3"), (1.0, "1"), (0.55, "0.55")]
)
def test_fraction_text(theta: float, text: str) -> None:
    assert fraction_text(theta) == text
