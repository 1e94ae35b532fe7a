"""The classic confidence (logprob) deferral baseline: stop when the model is sure enough.

A call's confidence is the probability the model gave its own answer, read from the logprobs the
upstream returned. For a closed answer set (``classify``, ``choice``) that is the label's spelling
in the generated tokens: the answer token is the first one whose letters and digits, lowercased,
begin the label's. Its probability is the mass of its top alternatives that begin the chosen label
and no other label (so " Positive", "positive" and "Pos" all count for "positive"), and at least
the chosen token's own; the tokens that go on to spell the rest of the label multiply in (chain
rule: for "card_arrival" the decision may lie in "arr", not in the shared "card"). Mixing whole
and partial alternatives makes this an approximation, good enough to rank answers by certainty.
Without top alternatives the answer token's own probability is used; when no token begins the
label, exp(mean token logprob). For open tasks (number, regex, text) it is exp(mean token logprob).

A call without logprobs, or whose answer is unparsable, has confidence 0.0: an endpoint that
returns no logprobs never reaches a confidence threshold on its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from policies.answers import normalise
from policies.threshold import reaches
from policies.vote import Decision, _check_counts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from policies.answers import AnswerSpec
    from policies.logprobs import TokenLogprob


def answer_probability(
    text: str | None, logprobs: Sequence[TokenLogprob] | None, spec: AnswerSpec
) -> tuple[str | None, float]:
    """The label ``text`` normalises to, and the model's probability for it (see module doc)."""
    label = normalise(text, spec)
    if label is None or not logprobs:
        return label, 0.0
    if spec.task in ("classify", "choice"):
        return label, _label_probability(label, logprobs, spec.labels)
    return label, _mean_probability(logprobs)


def decide_confidence(
    results: Sequence[tuple[str | None, float]], pending: int, size: int, theta: float
) -> Decision:
    """Decide a tier from the (label, probability) of its finished calls.

    A label's tier confidence is the summed probability of the calls that chose it over ``size``,
    so a one-model tier is the classic baseline: accept iff p ≥ θ (within the contract's
    tolerance). Escalate once even every pending call at probability 1 could not get the best
    label there. ``agreement`` is the best label's confidence; equal ones go to the first chosen.
    """
    _check_counts(len(results), pending, size)
    mass: dict[str, float] = {}
    for label, probability in results:
        if label is not None:
            mass[label] = mass.get(label, 0.0) + probability
    label, best = max(mass.items(), key=lambda item: item[1], default=(None, 0.0))
    confidence = best / size
    if reaches(confidence, theta):
        return Decision("accept", label, confidence)
    if not reaches((best + pending) / size, theta):
        return Decision("escalate", label, confidence)
    return Decision("wait", label, confidence)


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _mean_probability(logprobs: Sequence[TokenLogprob]) -> float:
    return math.exp(sum(t.logprob for t in logprobs) / len(logprobs))


def _label_probability(
    label: str, logprobs: Sequence[TokenLogprob], labels: Sequence[str]
) -> float:
    target = _squash(label)
    others = {s for s in map(_squash, labels) if s and s != target}
    heads = (_squash(t.token) for t in logprobs)
    start = next((i for i, head in enumerate(heads) if head and target.startswith(head)), None)
    if start is None:
        return _mean_probability(logprobs)
    first = logprobs[start]
    probability = math.exp(first.logprob)
    if first.top:
        consistent = sum(
            math.exp(logprob)
            for token, logprob in first.top
            if (piece := _squash(token))
            and target.startswith(piece)
            and not any(other.startswith(piece) for other in others)
        )
        probability = min(1.0, max(probability, consistent))
    spelled = _squash(first.token)
    for token in logprobs[start + 1 :]:
        if len(spelled) >= len(target):
            break
        piece = _squash(token.token)
        if not target.startswith(spelled + piece):
            break
        spelled += piece
        probability *= math.exp(token.logprob)
    return probability
