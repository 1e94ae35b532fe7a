"""policies.audit: vote patterns, intervals and the gap (θ from a target: test_target_choice)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.audit import (
    PatternEvidence,
    VotePattern,
    audit_report,
    clopper_pearson,
    collect_evidence,
    lower_bound,
    pattern_report,
    regularized_beta,
    wilson,
)


def evidence(tier: int, text: str, audited: int, agreed: int, kind: str = "census") -> (
    PatternEvidence
):
    return PatternEvidence(VotePattern.parse(tier, text), kind, audited, agreed)  # type: ignore[arg-type]


def tail(agreed: int, n: int, p: float) -> float:
    """P(X ≥ agreed) for X ~ Binomial(n, p)."""
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(agreed, n + 1))


# --- patterns and evidence -------------------------------------------------------------------


def test_a_pattern_reads_and_writes_votes_over_size() -> None:
    pattern = VotePattern.parse(0, "2/3")
    assert pattern == VotePattern(0, 2, 3)
    assert pattern.text == "2/3"
    assert VotePattern.of(1, {"4": 2, "5": 1}, 3) == VotePattern(1, 2, 3)
    assert VotePattern.of(0, {}, 3).votes == 0
    assert pattern.accepted_by(2 / 3) and pattern.accepted_by(0.67) and not pattern.accepted_by(1)


@pytest.mark.parametrize("bad", [(0, 4, 3), (-1, 1, 1), (0, 0, 0)])
def test_impossible_patterns_are_refused(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        VotePattern(*bad)
    with pytest.raises(ValueError):
        VotePattern.parse(0, "two/3")


def test_evidence_counts_and_collects() -> None:
    three = VotePattern(0, 3, 3)
    two = VotePattern(0, 2, 3)
    collected = collect_evidence([(three, True), (two, False), (three, False), (three, True)],
                                 "sample")
    assert list(collected) == [two, three]
    assert collected[three] == PatternEvidence(three, "sample", 3, 2)
    assert collected[three].add(True).agreement == 0.75
    with pytest.raises(ValueError):
        PatternEvidence(three, "sample", 1, 2)


# --- intervals -------------------------------------------------------------------------------


def test_clopper_pearson_known_values() -> None:
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-6) and high == pytest.approx(0.812914, abs=1e-6)
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10)), 1.0)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    # The rule of three's exact form: all n agree, one-sided 95 %: 0.05^(1/n).
    assert lower_bound(150, 150, 0.95) == pytest.approx(0.05 ** (1 / 150))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), data=st.data(), confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_the_clopper_pearson_lower_bound_is_exact(
    n: int, data: st.DataObject, confidence: float
) -> None:
    """At the bound, observing ≥ agreed has probability exactly 1 − confidence."""
    agreed = data.draw(st.integers(1, n))
    low = lower_bound(agreed, n, confidence)
    assert tail(agreed, n, low) == pytest.approx(1 - confidence, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), level=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_intervals_contain_the_estimate_and_nest_by_level(
    n: int, data: st.DataObject, level: float
) -> None:
    agreed = data.draw(st.integers(0, n))
    p = agreed / n
    for method in (clopper_pearson, wilson):
        low, high = method(agreed, n, level)
        assert 0.0 <= low <= p <= high <= 1.0
        wider_low, wider_high = method(agreed, n, 0.999)
        assert wider_low <= low + 1e-12 and high <= wider_high + 1e-12
    # One-sided at the level sits inside the two-sided interval at the same level.
    assert clopper_pearson(agreed, n, level)[0] <= lower_bound(agreed, n, level) + 1e-12 <= p + 1e-9


@settings(max_examples=100, deadline=None)
@given(p=st.floats(0.0, 1.0), n=st.integers(2, 2000))
def test_intervals_narrow_with_n(p: float, n: int) -> None:
    """The same observed rate over 4× the trials gives a shorter interval."""
    agreed = round(p * n)
    for method in (clopper_pearson, wilson):
        low, high = method(agreed, n)
        low4, high4 = method(4 * agreed, 4 * n)
        assert high4 - low4 < high - low


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), data=st.data(), level=st.sampled_from([0.9, 0.95, 0.99]))
def test_the_lower_bound_rises_with_agreement_and_falls_with_confidence(
    n: int, data: st.DataObject, level: float
) -> None:
    agreed = data.draw(st.integers(0, n - 1))
    for method in ("clopper-pearson", "wilson"):
        assert lower_bound(agreed, n, level, method) < lower_bound(agreed + 1, n, level, method)
        assert lower_bound(agreed, n, 0.999, method) <= lower_bound(agreed, n, level, method)
    # One more disagreement observed (same agreed, one more trial) lowers it.
    assert lower_bound(agreed + 1, n + 1, level) <= lower_bound(agreed + 1, n, level)


def test_regularized_beta_matches_the_binomial_tail() -> None:
    # I_p(k, n − k + 1) = P(X ≥ k), X ~ Binomial(n, p).
    for n, k, p in [(10, 3, 0.2), (40, 39, 0.97), (200, 100, 0.5), (7, 7, 0.9)]:
        assert regularized_beta(p, k, n - k + 1) == pytest.approx(tail(k, n, p), rel=1e-10)


def test_bounds_stay_fast_and_sane_for_large_n() -> None:
    low = lower_bound(999_000, 1_000_000, 0.95)
    assert 0.9989 < low < 0.999


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        lower_bound(1, 2, 1.0)


# --- the gap and the report -------------------------------------------------------------------


def test_the_gap_is_disagreement_times_share_with_the_interval_mapped() -> None:
    row = pattern_report(evidence(0, "2/3", 100, 90), 0.2)
    assert row.gap == pytest.approx(0.1 * 0.2)
    low, high = row.ci95
    assert row.gap_ci95 == (pytest.approx((1 - high) * 0.2), pytest.approx((1 - low) * 0.2))
    assert row.gap_ci95[0] <= row.gap <= row.gap_ci95[1]
    empty = pattern_report(evidence(0, "1/3", 0, 0), 0.0)
    assert empty.gap is None and empty.ci95 == (0.0, 1.0)


def test_the_report_has_the_issue_shape() -> None:
    rows = [
        pattern_report(evidence(0, "2/3", 50, 40, "census"), 0.2),
        pattern_report(evidence(0, "3/3", 30, 30, "sample"), 0.7),
        pattern_report(evidence(1, "1/1", 10, 9, "sample"), 0.05),
    ]
    report = audit_report("r", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 0.12, rows)
    assert set(report) == {"route", "since", "until", "audit_cost_usd", "patterns"}
    assert [(p["tier"], p["votes"], p["kind"]) for p in report["patterns"]] == [
        (0, "3/3", "sample"), (0, "2/3", "census"), (1, "1/1", "sample"),
    ]
    assert set(report["patterns"][0]) == {
        "tier", "votes", "kind", "audited", "agreed", "agreement", "ci95", "traffic_share",
        "gap", "gap_ci95",
    }
