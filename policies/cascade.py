"""How a cascade is decided: one tier's state machine, and the walk over the tiers.

The live engine (``gateway.engine``) and ``coe eval replay`` (``gateway.evaluation.replay``) both
drive this module, so they cannot disagree: the engine feeds a :class:`Tally` the answers as its
calls come back, the replay feeds it a recording's answers in simulated arrival order (recorded
latency, ties in tier order); both walk the tiers with :class:`Cascade`.

A tier of ``size`` calls, per policy (``vote``: ``policies.vote.decide``; ``confidence``:
``policies.confidence.decide_confidence``):

- Every arrival is counted; the tier is decided as soon as a label reaches θ (accept) or none can
  any more (escalate). With ``wait_for_all`` the tier waits for every call (the seed paper's
  protocol) and then decides on all of them.
- A call that never answered (cancelled, or never started) votes for nothing but counts in the
  denominator. A call that answers after the decision is on record but did not vote: the tally
  ignores it.
- The final decision is taken on the calls that voted, with nothing pending. An accepted label of
  the vote policy is the tier's :func:`~policies.vote.plurality` (ties by the voters' mean logprob,
  else by configured order): with θ ≤ 1/2 and every call back two labels can both reach θ, and the
  tie must not go to whichever answered first. (Decided early, only one label can have reached θ,
  so this changes nothing there.) The confidence policy's final decision reads the calls in
  configured order for the same reason.

A cascade walks its tiers from the cheapest: an accepted tier answers (``agreed`` at tier 0,
``escalated`` later); the last reachable tier that does not reach θ answers with its plurality
(``last_tier``), and when nobody in it voted the request has ``upstream_failed``.

No I/O, no clock: callers do the calling and the timing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from policies.confidence import decide_confidence
from policies.vote import Ballot, CastVote, Decision, decide, plurality

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from policies.answers import AnswerSpec

Policy = Literal["vote", "confidence"]
ExitKind = Literal["agreed", "escalated", "last_tier"]
ExitStatus = Literal["ok", "upstream_failed"]

_NO_VOTE = CastVote(label=None, mean_logprob=None)
_NO_CONFIDENCE: tuple[str | None, float] = (None, 0.0)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One call's answer as it comes back.

    ``slot`` is the call's index in the tier's configured order; ``answer`` the normalised answer,
    None for a failed, timed-out or unparsable call; ``confidence`` the (label, probability) pair
    of ``policies.confidence.answer_probability``, read by the confidence policy only.
    """

    slot: int
    answer: str | None
    mean_logprob: float | None = None
    confidence: tuple[str | None, float] = _NO_CONFIDENCE


@dataclass(frozen=True, slots=True)
class TierResult:
    """A tier's final decision, its votes per label (in the order labels were first counted),
    every slot's vote in configured order (``label`` None: no vote), and the slots that voted."""

    decision: Decision
    votes: dict[str, int]
    cast: tuple[CastVote, ...]
    voted: frozenset[int]


class Tally:
    """The state machine of one tier: feed it arrivals, it says wait, accept or escalate."""

    __slots__ = (
        "_ballot",
        "_cast",
        "_confidences",
        "_decision",
        "_policy",
        "_size",
        "_theta",
        "_wait_for_all",
    )

    def __init__(
        self,
        spec: AnswerSpec,
        size: int,
        theta: float,
        *,
        policy: Policy = "vote",
        wait_for_all: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"a tier needs at least one call, got {size}")
        self._size = size
        self._theta = theta
        self._policy = policy
        self._wait_for_all = wait_for_all
        self._ballot = Ballot(spec)
        self._cast: list[CastVote | None] = [None] * size
        # (slot, (label, probability)) in arrival order.
        self._confidences: list[tuple[int, tuple[str | None, float]]] = []
        self._decision = Decision(action="wait", label=None, agreement=0.0)

    @property
    def pending(self) -> int:
        """Calls that have not voted yet (and, the tier being undecided, still may)."""
        return sum(vote is None for vote in self._cast)

    @property
    def decided(self) -> bool:
        return self._decision.action != "wait"

    def voted(self, slot: int) -> bool:
        """Whether ``slot`` voted: False for a cancelled call and for one that came back late."""
        return self._cast[slot] is not None

    def arrive(self, arrival: Arrival) -> Decision:
        """Count one answer and decide what the tier does now.

        ``wait`` means keep collecting; ``accept`` or ``escalate`` means the tier is decided and
        the calls still running can be cancelled. With ``wait_for_all`` the answer is ``wait``
        until every call is back. An arrival after the decision does not vote.
        """
        if not 0 <= arrival.slot < self._size:
            raise ValueError(f"slot {arrival.slot} is outside a tier of {self._size}")
        if self._cast[arrival.slot] is not None:
            raise ValueError(f"slot {arrival.slot} has already answered")
        if self.decided:
            return self._decision
        label = self._ballot.cast(arrival.answer)
        self._cast[arrival.slot] = CastVote(label=label, mean_logprob=arrival.mean_logprob)
        confidence = arrival.confidence if label is not None else _NO_CONFIDENCE
        self._confidences.append((arrival.slot, confidence))
        pending = self.pending
        if self._wait_for_all and pending:
            return self._decision
        if self._policy == "confidence":
            results = [pair for _, pair in self._confidences]
            self._decision = decide_confidence(results, pending, self._size, self._theta)
        else:
            self._decision = decide(self._ballot.votes, pending, self._size, self._theta)
        return self._decision

    def settle(self, arrivals: Iterable[Arrival]) -> TierResult:
        """Feed ``arrivals`` in order until the tier is decided (the rest did not answer in time:
        they are cancelled); the tier's result."""
        for arrival in arrivals:
            if self.arrive(arrival).action != "wait":
                break
        return self.result()

    def result(self) -> TierResult:
        """The tier's final decision on the calls that voted; the others count as cancelled."""
        cast = tuple(vote if vote is not None else _NO_VOTE for vote in self._cast)
        decision = self._decision
        if not self.decided or self._wait_for_all:
            decision = self._final()
        if decision.action == "accept" and self._policy == "vote":
            decision = replace(decision, label=plurality(cast))
        voted = frozenset(slot for slot, vote in enumerate(self._cast) if vote is not None)
        return TierResult(decision, self._ballot.votes, cast, voted)

    def _final(self) -> Decision:
        if self._policy == "confidence":
            ordered = [pair for _, pair in sorted(self._confidences, key=lambda item: item[0])]
            return decide_confidence(ordered, 0, self._size, self._theta)
        return decide(self._ballot.votes, 0, self._size, self._theta)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a request ends, once a tier has settled it."""

    tier: int
    answer: str | None
    decision: ExitKind
    status: ExitStatus


def conclude(tier: int, result: TierResult, *, last: bool) -> Verdict | None:
    """The cascade's step after tier ``tier``: its verdict, or None to go on to the next tier.

    ``last``: no tier after this one may be reached (the route's last, or the request's max tier).
    """
    if result.decision.action == "accept":
        kind: ExitKind = "agreed" if tier == 0 else "escalated"
        return Verdict(tier, result.decision.label, kind, "ok")
    if not last:
        return None
    answer = plurality(result.cast)
    return Verdict(tier, answer, "last_tier", "ok" if answer is not None else "upstream_failed")


class Cascade:
    """The walk over a request's tiers: iterate for the tier to run next, :meth:`settle` each.

    ``for index in cascade: cascade.settle(run(index))`` runs tier 0, then each next tier until
    one settles the request; ``verdict`` says how (None while a tier is still running).
    """

    __slots__ = ("_settled", "_tiers", "result", "tier", "verdict")

    def __init__(self, tiers: int) -> None:
        if tiers < 1:
            raise ValueError(f"a cascade needs at least one tier, got {tiers}")
        self._tiers = tiers
        self._settled = -1
        # The tier running (or that settled the request), and the last settled tier's result.
        self.tier = 0
        self.result: TierResult | None = None
        self.verdict: Verdict | None = None

    def __iter__(self) -> Iterator[int]:
        for index in range(self._tiers):
            self.tier = index
            yield index
            if self.verdict is not None:
                return
            if self._settled != index:
                raise RuntimeError(f"tier {index} was run but not settled")

    def settle(self, result: TierResult) -> Verdict | None:
        """Record the running tier's result; the request's verdict once it has one."""
        self.result = result
        self._settled = self.tier
        self.verdict = conclude(self.tier, result, last=self.tier == self._tiers - 1)
        return self.verdict
