"""The confidence (logprob) deferral baseline."""

from __future__ import annotations

import math

import pytest

from policies.answers import AnswerSpec
from policies.confidence import answer_probability, decide_confidence
from policies.vote import Decision
from providers.base import TokenLogprob

SENTIMENT = AnswerSpec("classify", ("positive", "negative"))
CHOICE = AnswerSpec("choice", ("A", "B", "C", "D"))
BANKING = AnswerSpec("classify", ("card_arrival", "card_linking", "exchange_rate"))
ln = math.log


def _token(token: str, p: float, *top: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token=token, logprob=ln(p), top=tuple((t, ln(q)) for t, q in top))


def _read(text: str, logprobs: list[TokenLogprob], spec: AnswerSpec) -> tuple[str | None, float]:
    label, p = answer_probability(text, logprobs, spec)
    return label, round(p, 9)


def test_first_token_alternatives_spelling_the_chosen_label_add_up() -> None:
    first = _token("positive", 0.6, ("positive", 0.6), (" Positive", 0.2), ("negative", 0.15))
    label, p = answer_probability("positive", [first], SENTIMENT)
    assert label == "positive"
    assert p == pytest.approx(0.8)


def test_a_partial_first_token_counts_and_its_continuation_multiplies_in() -> None:
    tokens = [_token("Pos", 0.7, ("Pos", 0.7), ("Neg", 0.3)), _token("itive", 0.9)]
    assert _read("Positive", tokens, SENTIMENT) == ("positive", 0.63)


def test_without_top_alternatives_the_answer_tokens_own_probability_is_used() -> None:
    assert _read("B", [_token("B", 0.55)], CHOICE) == ("B", 0.55)


def test_the_answer_token_is_found_after_leading_chatter_and_markup() -> None:
    tokens = [
        _token("Answer", 0.99),
        _token(":", 0.99),
        _token(" (", 0.5),
        _token("B", 0.4, ("B", 0.4), ("C", 0.35), (" B", 0.1)),
        _token(")", 0.99),
    ]
    assert _read("Answer: (B)", tokens, CHOICE) == ("B", 0.5)


def test_a_shared_first_token_leaves_the_decision_to_the_tokens_that_follow() -> None:
    tokens = [
        _token("card", 0.9, ("card", 0.9), ("exchange", 0.1)),
        _token("_", 1.0),
        _token("arr", 0.5, ("arr", 0.5), ("link", 0.5)),
        _token("ival", 1.0),
        _token("\n", 0.2),
    ]
    label, p = answer_probability("card_arrival", tokens, BANKING)
    assert label == "card_arrival"
    assert p == pytest.approx(0.45)


def test_alternatives_never_lower_the_chosen_tokens_probability() -> None:
    first = _token("positive", 0.6, ("neg", 0.3))
    assert answer_probability("positive", [first], SENTIMENT)[1] == pytest.approx(0.6)


def test_when_no_token_spells_the_label_the_mean_token_probability_is_used() -> None:
    tokens = [_token("{", 0.5), _token("}", 0.5)]
    assert _read("positive", tokens, SENTIMENT) == ("positive", 0.5)


def test_open_tasks_use_the_mean_token_logprob() -> None:
    tokens = [TokenLogprob("4", -0.1), TokenLogprob("2", -0.3)]
    label, p = answer_probability("42", tokens, AnswerSpec("number"))
    assert label == "42"
    assert p == pytest.approx(math.exp(-0.2))


@pytest.mark.parametrize("logprobs", [None, []])
def test_without_logprobs_the_confidence_is_zero(logprobs: list[TokenLogprob] | None) -> None:
    assert answer_probability("positive", logprobs, SENTIMENT) == ("positive", 0.0)


def test_an_unparsable_answer_has_no_label_and_no_confidence() -> None:
    assert answer_probability("maybe", [_token("maybe", 0.99)], SENTIMENT) == (None, 0.0)


@pytest.mark.parametrize(
    ("results", "pending", "size", "theta", "expected"),
    [
        # one model: the classic baseline, accept iff p ≥ θ
        ([("pos", 0.9)], 0, 1, 0.9, Decision("accept", "pos", 0.9)),
        ([("pos", 0.8)], 0, 1, 0.9, Decision("escalate", "pos", 0.8)),
        ([], 1, 1, 0.9, Decision("wait", None, 0.0)),
        # an ensemble: summed probability of the calls that chose the label, over the size
        ([("pos", 0.9), ("pos", 0.8)], 1, 3, 0.5, Decision("accept", "pos", 1.7 / 3)),
        ([("pos", 0.9), ("pos", 0.8)], 1, 3, 0.9, Decision("wait", "pos", 1.7 / 3)),
        ([("pos", 0.5), ("neg", 0.6)], 1, 3, 0.9, Decision("escalate", "neg", 0.2)),
        # a failed call is a vote for nothing that still counts in the denominator
        ([("pos", 0.95), (None, 0.0)], 0, 2, 0.9, Decision("escalate", "pos", 0.475)),
        ([(None, 0.0), (None, 0.0)], 0, 2, 0.5, Decision("escalate", None, 0.0)),
    ],
)
def test_decide_confidence(
    results: list[tuple[str | None, float]],
    pending: int,
    size: int,
    theta: float,
    expected: Decision,
) -> None:
    decision = decide_confidence(results, pending, size, theta)
    assert decision.action == expected.action
    assert decision.label == expected.label
    assert decision.agreement == pytest.approx(expected.agreement)


def test_decide_confidence_refuses_more_results_than_endpoints() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        decide_confidence([("pos", 1.0), ("pos", 1.0)], 0, 1, 0.5)
