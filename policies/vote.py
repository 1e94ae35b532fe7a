"""The agreement vote of one tier: count labels, decide as early as the count allows, break ties.

Agreement is (votes for the leading label) / (endpoints in the tier): a failed, timed-out or
unparsable call votes for nothing but still counts in the denominator (CONTRACT.md).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from policies.threshold import reaches

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from policies.answers import AnswerSpec

_TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["accept", "escalate", "wait"]
    # The leading label; for accept, the accepted one.
    label: str | None
    # Votes (or, for the confidence policy, summed probability) for the leading label / size.
    agreement: float


def decide(votes: Mapping[str, int], pending: int, size: int, theta: float) -> Decision:
    """Accept once a label reaches θ; escalate once none can, even with every pending call.

    A label not seen yet could at most collect the pending calls, which the leading label can
    too, so the leading label settles both questions. Between labels with equal votes the one
    counted first (the mapping's order) leads. With nothing pending the answer is never wait.
    """
    _check_counts(sum(votes.values()), pending, size)
    label, count = max(votes.items(), key=lambda item: item[1], default=(None, 0))
    agreement = count / size
    if reaches(agreement, theta):
        return Decision("accept", label, agreement)
    if not reaches((count + pending) / size, theta):
        return Decision("escalate", label, agreement)
    return Decision("wait", label, agreement)


def _check_counts(finished: float, pending: int, size: int) -> None:
    if size < 1 or pending < 0 or finished < 0 or finished + pending > size:
        raise ValueError(
            f"inconsistent tier counts: {finished} votes, {pending} pending, {size} size"
        )


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1 of two texts: lowercased words, punctuation ignored, counts kept.

    Two texts without words are the same (1.0); one without words matches nothing (0.0).
    """
    left, right = Counter(_TOKEN.findall(a.lower())), Counter(_TOKEN.findall(b.lower()))
    if not left or not right:
        return float(left == right)
    common = sum((left & right).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(left.values()), common / sum(right.values())
    return 2 * precision * recall / (precision + recall)


class Ballot:
    """Counts answers of one tier; for task 'text' an answer joins the first earlier label whose
    token_f1 ≥ spec.text_similarity."""

    __slots__ = ("_similarity", "_votes")

    def __init__(self, spec: AnswerSpec) -> None:
        self._similarity = spec.text_similarity if spec.task == "text" else None
        self._votes: dict[str, int] = {}

    def cast(self, answer: str | None) -> str | None:
        """Count one normalised answer; returns the label it counted for (None: no vote)."""
        if answer is None:
            return None
        label = answer
        if self._similarity is not None and answer not in self._votes:
            label = next(
                (seen for seen in self._votes if token_f1(answer, seen) >= self._similarity),
                answer,
            )
        self._votes[label] = self._votes.get(label, 0) + 1
        return label

    @property
    def votes(self) -> dict[str, int]:
        """Votes per label, in the order labels were first seen (a copy)."""
        return dict(self._votes)


@dataclass(frozen=True, slots=True)
class CastVote:
    label: str | None
    mean_logprob: float | None


def plurality(cast: Sequence[CastVote]) -> str | None:
    """The most voted label of a tier whose votes are in the tier's configured endpoint order.

    A tie goes to the label whose voters have the highest mean ``mean_logprob`` (voters without
    one left out of the mean) when every tied label has a voter with one; otherwise, or when
    those means tie too, to the tied label whose first voter comes first. None if nobody voted.
    """
    counts: Counter[str] = Counter(v.label for v in cast if v.label is not None)
    if not counts:
        return None
    most = max(counts.values())
    # Counter keeps first-seen order, which is the tier order of each label's first voter.
    tied = [label for label, count in counts.items() if count == most]
    if len(tied) == 1:
        return tied[0]
    means: dict[str, float] = {}
    for label in tied:
        scores = [v.mean_logprob for v in cast if v.label == label and v.mean_logprob is not None]
        if not scores:
            return tied[0]
        means[label] = sum(scores) / len(scores)
    return max(tied, key=means.__getitem__)
