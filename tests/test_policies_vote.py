"""The tier vote: early accept and escalate, text clustering, and the last tier's plurality."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.answers import AnswerSpec
from policies.threshold import parse_threshold
from policies.vote import Ballot, CastVote, Decision, decide, plurality, token_f1

TWO_THIRDS = parse_threshold("2/3")


@pytest.mark.parametrize(
    ("votes", "pending", "size", "theta", "expected"),
    [
        # 3 of 3
        ({"pos": 3}, 0, 3, TWO_THIRDS, Decision("accept", "pos", 1.0)),
        ({"pos": 3}, 0, 3, 1.0, Decision("accept", "pos", 1.0)),
        # 2 of 3 at θ = 2/3, at 0.67 and 0.66 (the tolerance), and at θ = 1
        ({"pos": 2, "neg": 1}, 0, 3, TWO_THIRDS, Decision("accept", "pos", 2 / 3)),
        ({"pos": 2, "neg": 1}, 0, 3, 0.67, Decision("accept", "pos", 2 / 3)),
        ({"pos": 2, "neg": 1}, 0, 3, 0.66, Decision("accept", "pos", 2 / 3)),
        ({"pos": 2, "neg": 1}, 0, 3, 0.7, Decision("escalate", "pos", 2 / 3)),
        ({"pos": 2, "neg": 1}, 0, 3, 1.0, Decision("escalate", "pos", 2 / 3)),
        # early accept with a call still pending
        ({"pos": 2}, 1, 3, TWO_THIRDS, Decision("accept", "pos", 2 / 3)),
        ({"pos": 3}, 2, 5, 0.6, Decision("accept", "pos", 0.6)),
        # early escalate: no label can get there even if every pending call joins it
        ({"pos": 1, "neg": 1}, 1, 3, 1.0, Decision("escalate", "pos", 1 / 3)),
        ({"pos": 1, "neg": 1, "neu": 1}, 2, 5, 0.8, Decision("escalate", "pos", 0.2)),
        # undecided while it could still go either way
        ({"pos": 2}, 1, 3, 1.0, Decision("wait", "pos", 2 / 3)),
        ({"pos": 1}, 2, 3, TWO_THIRDS, Decision("wait", "pos", 1 / 3)),
        ({}, 3, 3, TWO_THIRDS, Decision("wait", None, 0.0)),
        # a label not seen yet can still win with the pending calls
        ({"pos": 1}, 2, 3, 0.6, Decision("wait", "pos", 1 / 3)),
        # every call failed or was unparsable: they count in the denominator
        ({}, 0, 3, TWO_THIRDS, Decision("escalate", None, 0.0)),
        ({"pos": 1}, 0, 3, 0.5, Decision("escalate", "pos", 1 / 3)),
        # one endpoint
        ({"pos": 1}, 0, 1, 1.0, Decision("accept", "pos", 1.0)),
        ({}, 0, 1, 0.5, Decision("escalate", None, 0.0)),
        ({}, 1, 1, 1.0, Decision("wait", None, 0.0)),
    ],
)
def test_decide(
    votes: dict[str, int], pending: int, size: int, theta: float, expected: Decision
) -> None:
    assert decide(votes, pending, size, theta) == expected


def test_equal_votes_lead_in_the_order_they_were_counted() -> None:
    assert decide({"neg": 2, "pos": 2}, 0, 4, 0.5) == Decision("accept", "neg", 0.5)


@pytest.mark.parametrize(
    ("votes", "pending", "size"),
    [({"pos": 3}, 1, 3), ({}, -1, 3), ({}, 0, 0), ({"pos": -1}, 0, 3)],
)
def test_inconsistent_counts_are_refused(votes: dict[str, int], pending: int, size: int) -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        decide(votes, pending, size, 0.5)


@settings(database=None, derandomize=True)
@given(
    size=st.integers(1, 7),
    theta=st.sampled_from([0.5, TWO_THIRDS, 0.67, 0.75, 1.0]),
    answers=st.lists(st.sampled_from(["pos", "neg", "neu", None]), min_size=7, max_size=7),
)
def test_an_early_decision_is_the_one_all_the_votes_give(
    size: int, theta: float, answers: list[str | None]
) -> None:
    ballot = Ballot(AnswerSpec("classify", ("pos", "neg", "neu")))
    early: Decision | None = None
    for arrived, answer in enumerate(answers[:size], start=1):
        ballot.cast(answer)
        decision = decide(ballot.votes, size - arrived, size, theta)
        if early is None and decision.action != "wait":
            early = decision
    final = decide(ballot.votes, 0, size, theta)
    assert final.action != "wait"
    assert early is not None
    assert (early.action, early.label if early.action == "accept" else None) == (
        final.action,
        final.label if final.action == "accept" else None,
    )


@pytest.mark.parametrize(
    ("a", "b", "f1"),
    [
        ("the eiffel tower", "the eiffel tower", 1.0),
        ("The Eiffel Tower.", "the eiffel tower", 1.0),
        ("a b c", "a b d", 2 / 3),
        ("a a", "a", 2 / 3),
        ("paris", "london", 0.0),
        ("", "...", 1.0),
        ("", "paris", 0.0),
    ],
)
def test_token_f1(a: str, b: str, f1: float) -> None:
    assert token_f1(a, b) == pytest.approx(f1)
    assert token_f1(b, a) == pytest.approx(f1)


def test_ballot_counts_closed_answers_as_they_are() -> None:
    ballot = Ballot(AnswerSpec("classify", ("pos", "neg")))
    assert [ballot.cast(a) for a in ("pos", "neg", None, "pos")] == ["pos", "neg", None, "pos"]
    assert ballot.votes == {"pos": 2, "neg": 1}


def test_ballot_joins_a_text_answer_to_the_first_similar_earlier_one() -> None:
    ballot = Ballot(AnswerSpec("text", text_similarity=0.8))
    assert ballot.cast("the eiffel tower") == "the eiffel tower"
    assert ballot.cast("paris") == "paris"
    # F1("eiffel tower", "the eiffel tower") = 0.8: at the threshold, so it joins.
    assert ballot.cast("eiffel tower") == "the eiffel tower"
    assert ballot.cast("the louvre") == "the louvre"
    assert ballot.votes == {"the eiffel tower": 2, "paris": 1, "the louvre": 1}


def test_ballot_text_answer_joins_the_earliest_of_several_similar_labels() -> None:
    ballot = Ballot(AnswerSpec("text", text_similarity=0.5))
    ballot.cast("red car")
    ballot.cast("blue car")
    assert ballot.cast("car") == "red car"


def test_ballot_votes_are_a_copy() -> None:
    ballot = Ballot(AnswerSpec("classify", ("pos",)))
    ballot.cast("pos")
    ballot.votes["pos"] = 99
    assert ballot.votes == {"pos": 1}


def _votes(*pairs: tuple[str | None, float | None]) -> list[CastVote]:
    return [CastVote(label=label, mean_logprob=lp) for label, lp in pairs]


@pytest.mark.parametrize(
    ("cast", "winner"),
    [
        (_votes(("A", None), ("B", None), ("B", None)), "B"),
        (_votes(), None),
        (_votes((None, None), (None, -0.1)), None),
        # tie broken by the higher mean logprob of each label's voters
        (_votes(("A", -0.5), ("B", -0.1)), "B"),
        (_votes(("A", -0.2), ("B", -0.9), ("A", None), ("B", -0.1)), "A"),
        # a tied label without any logprob: the tier order decides
        (_votes(("A", -0.9), ("B", None)), "A"),
        (_votes((None, None), ("B", None), ("A", -0.1), ("B", None), ("A", -0.1)), "B"),
        # equal means: the tier order decides
        (_votes(("B", -0.3), ("A", -0.3)), "B"),
        # not tied: logprobs do not matter
        (_votes(("A", -5.0), ("A", -5.0), ("B", -0.01)), "A"),
    ],
)
def test_plurality(cast: list[CastVote], winner: str | None) -> None:
    assert plurality(cast) == winner
