"""policies.cascade: one tier's state machine and the walk over the tiers, one behaviour a test."""

from __future__ import annotations

import pytest

from policies.answers import AnswerSpec
from policies.cascade import Arrival, Cascade, Tally, TierResult, Verdict, conclude
from policies.threshold import parse_threshold
from policies.vote import CastVote, Decision

SPEC = AnswerSpec(task="classify", labels=("yes", "no"))
TWO_THIRDS = parse_threshold("2/3")


def tally(size: int = 3, theta: float = TWO_THIRDS, **options: object) -> Tally:
    return Tally(SPEC, size, theta, **options)  # type: ignore[arg-type]


def result(action: str, label: str | None, cast: list[str | None]) -> TierResult:
    votes = tuple(CastVote(label=c, mean_logprob=None) for c in cast)
    return TierResult(
        Decision(action, label, 0.0),  # type: ignore[arg-type]
        {},
        votes,
        frozenset(i for i, c in enumerate(cast) if c is not None),
    )


def test_waits_while_the_tier_can_still_go_either_way() -> None:
    t = tally()
    assert t.arrive(Arrival(0, "yes")).action == "wait"
    assert t.pending == 2


def test_accepts_as_soon_as_a_label_reaches_theta() -> None:
    t = tally()
    t.arrive(Arrival(2, "yes"))
    assert t.arrive(Arrival(0, "yes")) == Decision("accept", "yes", 2 / 3)
    assert t.pending == 1


def test_escalates_as_soon_as_no_label_can_reach_theta() -> None:
    t = tally(theta=1.0)
    t.arrive(Arrival(0, "yes"))
    assert t.arrive(Arrival(1, "no")).action == "escalate"


def test_a_failed_or_unparsable_call_votes_for_nothing_but_counts_in_the_denominator() -> None:
    t = tally()
    t.arrive(Arrival(0, "yes"))
    t.arrive(Arrival(1, None))
    assert t.arrive(Arrival(2, None)) == Decision("escalate", "yes", 1 / 3)


def test_a_call_that_never_answered_counts_as_cancelled() -> None:
    t = tally(theta=0.5)
    t.arrive(Arrival(1, "no"))
    # Two calls were cut off by the deadline: 1 of 3 does not reach 1/2.
    final = t.result()
    assert final.decision == Decision("escalate", "no", 1 / 3)
    assert final.voted == frozenset({1})
    assert final.cast[0] == CastVote(label=None, mean_logprob=None)


def test_a_late_arrival_after_the_decision_does_not_vote() -> None:
    t = tally()
    t.arrive(Arrival(0, "yes"))
    decided = t.arrive(Arrival(1, "yes"))
    assert t.arrive(Arrival(2, "no")) == decided
    assert not t.voted(2)
    assert t.result().votes == {"yes": 2}


def test_wait_for_all_waits_until_every_call_is_back() -> None:
    t = tally(wait_for_all=True)
    assert t.arrive(Arrival(0, "yes")).action == "wait"
    assert t.arrive(Arrival(1, "yes")).action == "wait"
    assert t.arrive(Arrival(2, "no")) == Decision("accept", "yes", 2 / 3)
    assert t.result().voted == frozenset({0, 1, 2})


def test_wait_for_all_tie_at_half_goes_to_the_configured_order_not_the_first_answer() -> None:
    t = tally(size=2, theta=0.5, wait_for_all=True)
    t.arrive(Arrival(1, "no"))
    t.arrive(Arrival(0, "yes"))
    assert t.result().decision == Decision("accept", "yes", 0.5)


def test_wait_for_all_tie_at_half_goes_to_the_higher_mean_logprob() -> None:
    t = tally(size=4, theta=0.5, wait_for_all=True)
    for slot, (answer, logprob) in enumerate(
        [("yes", -2.0), ("no", -0.1), ("yes", -1.0), ("no", -0.3)]
    ):
        t.arrive(Arrival(slot, answer, logprob))
    assert t.result().decision.label == "no"


def test_early_accept_keeps_the_label_that_reached_theta() -> None:
    t = tally(size=2, theta=0.5)
    t.arrive(Arrival(1, "no", -5.0))
    assert t.result().decision == Decision("accept", "no", 0.5)
    assert t.result().voted == frozenset({1})


def test_confidence_policy_accepts_on_probability_mass() -> None:
    t = tally(size=1, theta=0.9, policy="confidence")
    assert t.arrive(Arrival(0, "yes", confidence=("yes", 0.95))).action == "accept"


def test_confidence_policy_defers_an_unsure_call() -> None:
    t = tally(size=1, theta=0.9, policy="confidence")
    assert t.arrive(Arrival(0, "yes", confidence=("yes", 0.6))).action == "escalate"


def test_confidence_of_an_unreadable_answer_is_ignored() -> None:
    t = tally(size=1, theta=0.5, policy="confidence")
    assert t.arrive(Arrival(0, None, confidence=("yes", 1.0))).action == "escalate"


def test_confidence_wait_for_all_tie_goes_to_the_configured_order() -> None:
    t = tally(size=2, theta=0.5, policy="confidence", wait_for_all=True)
    t.arrive(Arrival(1, "no", confidence=("no", 1.0)))
    t.arrive(Arrival(0, "yes", confidence=("yes", 1.0)))
    assert t.result().decision == Decision("accept", "yes", 0.5)


def test_settle_stops_at_the_deciding_arrival() -> None:
    t = tally()
    final = t.settle(Arrival(slot, "yes") for slot in (2, 0, 1))
    assert final.voted == frozenset({0, 2})


def test_votes_are_in_the_order_labels_were_first_counted() -> None:
    t = tally(theta=1.0, wait_for_all=True)
    for slot, answer in [(2, "no"), (0, "yes"), (1, "yes")]:
        t.arrive(Arrival(slot, answer))
    assert list(t.result().votes) == ["no", "yes"]


@pytest.mark.parametrize("slot", [-1, 3])
def test_a_slot_outside_the_tier_is_refused(slot: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        tally().arrive(Arrival(slot, "yes"))


def test_a_slot_answering_twice_is_refused() -> None:
    t = tally()
    t.arrive(Arrival(0, "yes"))
    with pytest.raises(ValueError, match="already"):
        t.arrive(Arrival(0, "no"))


def test_an_accepted_first_tier_is_agreed() -> None:
    assert conclude(0, result("accept", "yes", ["yes", "yes"]), last=False) == Verdict(
        0, "yes", "agreed", "ok"
    )


def test_an_accepted_later_tier_is_escalated() -> None:
    assert conclude(1, result("accept", "no", ["no"]), last=True) == Verdict(
        1, "no", "escalated", "ok"
    )


def test_an_escalating_tier_that_is_not_the_last_goes_on() -> None:
    assert conclude(0, result("escalate", "yes", ["yes", "no"]), last=False) is None


def test_the_last_tier_answers_with_its_plurality() -> None:
    verdict = conclude(1, result("escalate", "no", ["no", "yes", "yes"]), last=True)
    assert verdict == Verdict(1, "yes", "last_tier", "ok")


def test_a_last_tier_without_a_vote_is_upstream_failed() -> None:
    verdict = conclude(2, result("escalate", None, [None, None]), last=True)
    assert verdict == Verdict(2, None, "last_tier", "upstream_failed")


def test_the_cascade_walks_until_a_tier_settles_it() -> None:
    cascade = Cascade(3)
    walked = []
    for index in cascade:
        walked.append(index)
        action = "accept" if index == 1 else "escalate"
        cascade.settle(result(action, "yes", ["yes"]))
    assert walked == [0, 1]
    assert cascade.verdict == Verdict(1, "yes", "escalated", "ok")
    assert cascade.tier == 1


def test_the_cascade_ends_at_its_last_tier() -> None:
    cascade = Cascade(2)
    for _ in cascade:
        cascade.settle(result("escalate", "no", ["no", None]))
    assert cascade.verdict == Verdict(1, "no", "last_tier", "ok")


def test_a_tier_run_but_not_settled_is_an_error() -> None:
    cascade = Cascade(2)
    with pytest.raises(RuntimeError, match="not settled"):
        for _ in cascade:
            pass
