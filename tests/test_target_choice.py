"""policies.target: θ from a target agreement, judged on the traffic θ accepts, per stratum, from
the most recent sufficient source (the live controller's rule and ``coe eval calibrate``'s)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.audit import VotePattern, lower_bound
from policies.target import AuditRow, choose_threshold, votes_needed

TARGET, CONFIDENCE, MIN = 0.98, 0.95, 150
ALLOWED = (2 / 3, 1.0)


def rows(
    votes: int, n: int, disagree: int = 0, *, kind: str = "sample", served: float | None = 1.0,
    tier: int = 0, size: int = 3,
) -> list[AuditRow]:
    """``n`` audited rows of one pattern, the first ``disagree`` of them disagreeing."""
    pattern = VotePattern(tier, votes, size)
    return [AuditRow(pattern, kind, i >= disagree, served) for i in range(n)]  # type: ignore[arg-type]


def at_one(two_thirds_disagree: int = 0, n: int = 200) -> list[AuditRow]:
    """Served at θ = 1: unanimous tiers sampled, 2/3 tiers escalated (their census)."""
    return rows(3, n) + rows(2, n, two_thirds_disagree, kind="census")


def choose(evidence: list[AuditRow], **kwargs: object) -> float:
    return choose_threshold(ALLOWED, evidence, TARGET, CONFIDENCE, MIN, **kwargs).theta  # type: ignore[arg-type]


def test_votes_needed_follow_the_contract_tolerance() -> None:
    assert [votes_needed(t, 3) for t in (1 / 3, 0.5, 0.66, 2 / 3, 1.0)] == [1, 2, 2, 2, 3]
    assert votes_needed(0.75, 2) == 2


def test_it_loosens_on_a_stricter_thetas_samples_and_census() -> None:
    choice = choose_threshold(ALLOWED, at_one(), TARGET, CONFIDENCE, MIN)
    assert choice.theta == 2 / 3 and not choice.fallback
    judged = {(b.pattern.text, b.kind, b.source) for b in choice.options[1].accepted}
    assert judged == {("3/3", "sample", "stricter"), ("2/3", "census", "stricter")}


def test_a_bad_census_stratum_blocks_although_pooling_would_pass() -> None:
    """2/3 at 90 % hidden behind ten times as many unanimous samples at 100 %."""
    evidence = rows(3, 2000) + rows(2, 200, 20, kind="census")
    choice = choose_threshold(ALLOWED, evidence, TARGET, CONFIDENCE, MIN)
    assert choice.theta == 1.0 and not choice.fallback  # 3/3 alone supports θ = 1
    assert "lower bound below 0.98 for 2/3@0 census" in choice.options[1].why


def test_until_min_samples_the_strictest_is_served() -> None:
    few = choose_threshold(ALLOWED, at_one(n=MIN - 1), TARGET, CONFIDENCE, MIN)
    assert few.theta == 1.0 and few.fallback and f"fewer than {MIN} audited" in few.reason
    assert choose_threshold(ALLOWED, [], TARGET, CONFIDENCE, MIN).fallback


def test_once_loosened_its_own_samples_keep_it_loose() -> None:
    """At θ = 2/3 early quorum records 2/3 for unanimous tiers too: no 3/3 evidence accrues,
    and none is needed: θ's own samples judge the traffic it accepts."""
    evidence = at_one() + rows(2, MIN, served=2 / 3)
    choice = choose_threshold(ALLOWED, evidence, TARGET, CONFIDENCE, MIN)
    assert choice.theta == 2 / 3
    assert {b.source for b in choice.options[1].accepted} == {"direct"}


def test_just_loosened_the_stricter_evidence_holds_until_its_own_samples_are_enough() -> None:
    # A few bad samples of its own cannot judge yet: no flapping back on too little evidence.
    evidence = at_one() + rows(2, MIN - 1, 5, served=2 / 3)
    assert choose(evidence) == 2 / 3


def test_it_tightens_when_its_own_samples_fall_below_target() -> None:
    # The census that loosened it is older than the samples that now judge it.
    evidence = at_one() + rows(2, 200, 20, served=2 / 3)
    choice = choose_threshold(ALLOWED, evidence, TARGET, CONFIDENCE, MIN)
    assert choice.theta == 1.0
    assert "lower bound below 0.98 for 2/3@0 sample" in choice.options[1].why


def test_after_tightening_only_fresh_census_loosens_again() -> None:
    tightened = at_one() + rows(2, 200, 20, served=2 / 3)
    # Fresh evidence at θ = 1, newer than the bad samples: enough and good, so loosen again.
    assert choose(tightened + at_one()) == 2 / 3
    # Too little of it yet: the bad samples still judge.
    assert choose(tightened + at_one(n=MIN - 1)) == 1.0


def test_the_window_keeps_the_latest_rows_of_each_stratum() -> None:
    evidence = at_one() + rows(2, 200, 20, served=2 / 3) + rows(2, 200, served=2 / 3)
    assert choose(evidence) == 1.0  # 20 disagreements in 400
    assert choose(evidence, window=200) == 2 / 3  # only the latest 200: all agree


def test_rows_served_looser_than_theta_are_no_evidence_for_it() -> None:
    """Served at 1/3, a tier stops at its first answer: whether 2/3 would accept is unknown."""
    evidence = rows(1, 500, served=1 / 3)
    choice = choose_threshold((1 / 3, 2 / 3, 1.0), evidence, 0.5, CONFIDENCE, MIN)
    assert choice.theta == 1 / 3
    assert not choice.options[1].supported and "nothing audited" in choice.options[1].why


def test_wait_for_all_records_full_patterns_which_are_judged_apart() -> None:
    """Served at 2/3 waiting for every call: 3/3 and 2/3 samples are two strata."""
    evidence = rows(3, 2000, served=2 / 3) + rows(2, 200, 20, served=2 / 3)
    choice = choose_threshold(ALLOWED, evidence, TARGET, CONFIDENCE, MIN)
    assert choice.theta == 1.0
    strict = choice.options[0]
    assert strict.supported and [b.pattern.text for b in strict.accepted] == ["3/3"]


def test_every_tier_below_the_top_must_pass() -> None:
    good = at_one()
    bad_tier_1 = rows(2, 200, 0, tier=1, size=2) + rows(1, 200, 50, kind="census", tier=1, size=2)
    assert choose(good) == 2 / 3
    allowed = (0.5, 1.0)
    assert choose_threshold(allowed, good, 0.98, 0.95, MIN).theta == 0.5
    assert choose_threshold(allowed, good + bad_tier_1, 0.98, 0.95, MIN).theta == 1.0


def test_rows_of_an_earlier_shape_of_the_route_are_left_out() -> None:
    """Tier 0 had two endpoints before a reload made it three: its old rows judge nothing."""
    old = rows(2, 300, 100, size=2)  # unanimous pairs, a third of them wrong
    assert choose(old + at_one()) == 1.0
    assert choose(old + at_one(), tier_sizes={0: 3}) == 2 / 3


def test_equivalent_thresholds_are_one_hypothesis() -> None:
    # 1/2 and 2/3 both need two votes of three: one test, at the confidence itself.
    one = choose_threshold((0.5, 2 / 3, 1.0), at_one(), TARGET, CONFIDENCE, MIN)
    assert {b.level for o in one.options for b in o.accepted} == {CONFIDENCE}
    # 1/3 and 2/3 differ: two loosenings to choose between, each at 1 − 0.05/2.
    two = choose_threshold((1 / 3, 2 / 3, 1.0), at_one(), TARGET, CONFIDENCE, MIN)
    assert [b.level for o in two.options for b in o.accepted] == pytest.approx(
        [0.975] * sum(len(o.accepted) for o in two.options))


def test_offline_census_rows_are_full_patterns() -> None:
    census = rows(3, 400, kind="census", served=None) + rows(2, 200, 60, kind="census",
                                                             served=None)
    assert choose_threshold(ALLOWED, census, 0.6, CONFIDENCE, MIN).theta == 2 / 3
    assert choose_threshold(ALLOWED, census, 0.98, CONFIDENCE, MIN).theta == 1.0


def test_bad_inputs_are_refused() -> None:
    cases: list[dict[str, object]] = [
        {"allowed": []}, {"allowed": [0.0]}, {"target": 0.0}, {"confidence": 1.0},
        {"min_samples": -1}, {"window": MIN - 1},
    ]
    for kwargs in cases:
        arguments = {"allowed": ALLOWED, "rows": [], "target": 0.9, "confidence": 0.95,
                     "min_samples": MIN, **kwargs}
        with pytest.raises(ValueError):
            choose_threshold(**arguments)  # type: ignore[arg-type]


era = st.tuples(
    st.sampled_from([1.0, 2 / 3]),  # θ in force
    st.integers(0, 300),  # samples (3/3 at θ = 1, 2/3 at θ = 2/3)
    st.floats(0.8, 1.0),  # their agreement
    st.integers(0, 300),  # census of 2/3 at θ = 1
    st.floats(0.8, 1.0),
)


def _rows(eras: list[tuple[float, int, float, int, float]]) -> list[AuditRow]:
    found: list[AuditRow] = []
    for served, samples, rate, census, census_rate in eras:
        votes = 3 if served == 1.0 else 2
        found += rows(votes, samples, samples - round(rate * samples), served=served)
        if served == 1.0:
            found += rows(2, census, census - round(census_rate * census), kind="census")
    return found


@settings(max_examples=150, deadline=None)
@given(eras=st.lists(era, max_size=4), target=st.floats(0.8, 0.999), min_samples=st.integers(1, 80))
def test_a_loosened_theta_always_rests_on_strata_that_each_meet_the_target(
    eras: list[tuple[float, int, float, int, float]], target: float, min_samples: int
) -> None:
    choice = choose_threshold(ALLOWED, _rows(eras), target, CONFIDENCE, min_samples)
    if choice.fallback:
        assert choice.theta == 1.0
        return
    option = next(o for o in choice.options if o.theta == choice.theta)
    assert option.accepted
    for bound in option.accepted:
        assert bound.audited >= min_samples
        assert bound.lower == lower_bound(bound.agreed, bound.audited, bound.level)
        assert bound.lower >= target


@settings(max_examples=150, deadline=None)
@given(eras=st.lists(era, max_size=4), targets=st.tuples(st.floats(0.5, 1.0), st.floats(0.5, 1.0)))
def test_a_higher_target_never_loosens_theta(
    eras: list[tuple[float, int, float, int, float]], targets: tuple[float, float]
) -> None:
    low, high = sorted(targets)
    evidence = _rows(eras)
    at_low = choose_threshold(ALLOWED, evidence, low, CONFIDENCE, 20)
    at_high = choose_threshold(ALLOWED, evidence, high, CONFIDENCE, 20)
    assert at_high.theta >= at_low.theta
