"""The vote cascade of ``gateway.evaluation.replay``, computed over a whole recording with numpy.

``Replayer`` walks each request through the policy code; a search over thousands of cascades needs
the same figures faster. ``RecordingArrays`` precomputes, per example × endpoint, the normalised
answer as a label id (-1: no vote), the recorded latency, the billed cost of the finished call and
the cost of the call cancelled (``gateway.billing.Biller`` prices both, as the replay does); then a
tier's decision, answer, time and cost come from array operations over every example at once, and
each tier's result is cached, so a cascade costs a few masked sums.

It agrees with ``Replayer.evaluate`` to rounding (``tests/test_eval_search.py``) because it encodes
the same rules, those of ``policies.vote``:

- Arrival order: by recorded latency, ties in tier order (a stable sort).
- Early quorum: after each arrival, with ``c`` the most votes any label holds and ``k`` the fewest
  votes that reach θ (``policies.threshold.reaches``), the tier accepts once ``c ≥ k`` and escalates
  once ``c + pending < k``; the calls still out then are cancelled. The accepted label is the one
  whose vote made ``c`` reach ``k``: the first label to reach θ. (With θ ≤ 1/2 a second label could
  reach θ later, but the tier has stopped by then; only one label has reached θ at the decision.)
- Wait for all: every call votes, then the tier decides. The label it accepts is the
  ``plurality`` of all votes (``policies.cascade.Tally.result``), not the first to arrive: with
  θ ≤ 1/2 two labels can both reach θ, and the tie goes by the rule below.
- ``plurality``, of the votes a tier has (finished calls only), in configured tier order: the most
  voted label; ties go to the label whose voters have the higher mean logprob when every tied label
  has a voter with one, else to the label whose first voter comes first in the tier. Without
  logprobs that is computed here; with them, the few tied examples are handed to
  ``policies.vote.plurality`` itself. The last tier, when it does not accept, answers it.

Only the vote policy (the confidence policy is the replay's job) and closed answers (not task
``text``, whose ballot merges answers by similarity in arrival order) are supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.billing import Biller
from gateway.config import Settings
from gateway.evaluation.recording import answer_spec
from policies.answers import normalise
from policies.pricing import blended_hourly_usd
from policies.threshold import reaches
from policies.vote import CastVote, plurality
from providers.base import CallRecord
from providers.endpoint import EndpointConfig
from providers.prompting import prompt_chars

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from gateway.evaluation.replay import CascadeConfig
    from providers.recording import Recording, RecordingHeader

def quorum(size: int, theta: float) -> int:
    """The fewest votes of ``size`` that reach θ (``size + 1`` when none can)."""
    return next((c for c in range(1, size + 1) if reaches(c / size, theta)), size + 1)


def _settings(header: RecordingHeader) -> Settings:
    gpu_prices = {
        info.gpu: info.gpu_hour_usd
        for info in header.endpoints.values()
        if info.gpu is not None and info.gpu_hour_usd is not None
    }
    endpoints = tuple(
        EndpointConfig(
            name=info.name, kind="replay", model=info.model, recording="(search)",
            usd_per_mtok_in=info.usd_per_mtok_in, usd_per_mtok_out=info.usd_per_mtok_out,
            gpu=info.gpu, gpus=info.gpus,
        )
        for info in header.endpoints.values()
    )
    return Settings(endpoints=endpoints, pricing={"gpu_hour_usd": gpu_prices})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RecordingArrays:
    """Per example × endpoint figures of one recording (columns in the route's endpoint order)."""

    header: RecordingHeader
    names: tuple[str, ...]
    ids: tuple[str, ...]
    answer: NDArray[np.int64]  # label id, -1 for no vote
    gold: NDArray[np.int64]
    latency: NDArray[np.float64]
    finished_cost: NDArray[np.float64]
    cancelled_cost: NDArray[np.float64]  # a cancelled call's cost: this + per_ms × time held
    cancelled_per_ms: NDArray[np.float64]  # per endpoint (GPU-priced ones hold their GPU)
    mean_logprob: NDArray[np.float64]  # NaN where none
    labels: tuple[str, ...]  # label id → label
    # Whether some finished call's cost was estimated (no token counts were recorded).
    estimated: bool

    @classmethod
    def from_recording(cls, recording: Recording) -> RecordingArrays:
        header = recording.header
        spec = answer_spec(header)
        if spec.task == "text":
            raise ValueError("search supports closed answers only, not task 'text'")
        biller = Biller(_settings(header))
        names = tuple(recording.endpoint_names)
        n, e = len(recording.examples), len(names)
        label_ids: dict[str, int] = {}
        answer = np.full((n, e), -1, dtype=np.int64)
        gold = np.empty(n, dtype=np.int64)
        latency = np.empty((n, e))
        finished = np.empty((n, e))
        cancelled = np.empty((n, e))
        logprob = np.full((n, e), np.nan)
        per_ms = np.array(
            [
                0.0 if (info := header.endpoints[name]).gpu_hour_usd is None
                else info.gpus * info.gpu_hour_usd / 3_600_000.0
                for name in names
            ]
        )
        estimated = False
        for row, example in enumerate(recording.examples):
            chars = prompt_chars(example.messages)
            label = normalise(example.label, spec) or example.label
            gold[row] = label_ids.setdefault(label, len(label_ids))
            for col, name in enumerate(names):
                call = example.calls[name]
                record = call.to_record(name)
                text = normalise(record.text, spec) if record.status == "ok" else None
                status = record.status
                if status == "ok" and text is None:
                    status = "unparsable"
                priced = CallRecord(
                    endpoint=name, status=status, text=record.text, tokens_in=record.tokens_in,
                    tokens_out=record.tokens_out, latency_ms=call.latency_ms,
                    gpu_seconds=call.gpu_seconds,
                )
                priced.prompt_chars = chars
                cost = biller.price(priced)
                estimated |= cost.estimated
                stopped = CallRecord(endpoint=name, status="cancelled", latency_ms=0.0)
                stopped.prompt_chars = chars
                if text is not None:
                    answer[row, col] = label_ids.setdefault(text, len(label_ids))
                latency[row, col] = call.latency_ms
                finished[row, col] = cost.usd
                cancelled[row, col] = biller.price(stopped).usd
                mean = record.mean_logprob
                if mean is not None:
                    logprob[row, col] = mean
        return cls(
            header=header, names=names, ids=tuple(x.id for x in recording.examples),
            answer=answer, gold=gold, latency=latency, finished_cost=finished,
            cancelled_cost=cancelled, cancelled_per_ms=per_ms, mean_logprob=logprob,
            labels=tuple(label_ids), estimated=estimated,
        )

    @property
    def size(self) -> int:
        return int(self.gold.shape[0])

    def subset(self, rows: Sequence[int] | NDArray[np.int64]) -> RecordingArrays:
        """The same figures for some examples only (e.g. one half of a split)."""
        index = np.asarray(rows, dtype=np.int64)
        return RecordingArrays(
            header=self.header, names=self.names, ids=tuple(self.ids[i] for i in index),
            answer=self.answer[index], gold=self.gold[index], latency=self.latency[index],
            finished_cost=self.finished_cost[index], cancelled_cost=self.cancelled_cost[index],
            cancelled_per_ms=self.cancelled_per_ms, mean_logprob=self.mean_logprob[index],
            labels=self.labels, estimated=self.estimated,
        )


@dataclass(frozen=True, slots=True)
class TierResult:
    accept: NDArray[np.bool_]
    # The accepted label; for the last tier, the answer (accepted, else plurality); -1: none.
    label: NDArray[np.int64]
    took: NDArray[np.float64]
    cost: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Figures:
    """A cascade's outcome for every example."""

    answer: NDArray[np.int64]
    exit_tier: NDArray[np.int64]
    cost: NDArray[np.float64]
    latency: NDArray[np.float64]


@dataclass(slots=True)
class CascadeArrays:
    """Evaluates vote cascades over one ``RecordingArrays``, caching each tier's result."""

    data: RecordingArrays
    _columns: dict[str, int] = field(init=False)
    _cache: dict[tuple[Any, ...], TierResult] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._columns = {name: col for col, name in enumerate(self.data.names)}

    def tier(self, tier: tuple[str, ...], k: int, *, wait_for_all: bool, last: bool) -> TierResult:
        key = (tier, k, wait_for_all, last)
        result = self._cache.get(key)
        if result is None:
            result = self._cache[key] = self._tier([self._columns[n] for n in tier], k,
                                                   wait_for_all, last)
        return result

    def _tier(self, cols: list[int], k: int, wait_for_all: bool, last: bool) -> TierResult:
        data = self.data
        n, s = data.size, len(cols)
        rows = np.arange(n)
        answers, latency = data.answer[:, cols], data.latency[:, cols]
        order = np.argsort(latency, axis=1, kind="stable")
        arrived = np.take_along_axis(answers, order, axis=1)
        times = np.take_along_axis(latency, order, axis=1)
        valid = arrived >= 0
        # same[i, j, l]: arrivals j and l voted for the same label.
        same = (arrived[:, :, None] == arrived[:, None, :]) & valid[:, :, None]
        so_far = (same & np.tri(s, dtype=bool)).sum(axis=2)  # the label of j's votes after j
        leading = np.maximum.accumulate(so_far, axis=1)
        if wait_for_all:
            stop = np.full(n, s - 1)
            accept = leading[:, -1] >= k
        else:
            pending = s - 1 - np.arange(s)
            decided = (leading >= k) | (leading + pending < k)
            stop = np.argmax(decided, axis=1)
            accept = leading[rows, stop] >= k
        took = times[rows, stop]
        done = np.arange(s)[None, :] <= stop[:, None]
        finished = np.take_along_axis(data.finished_cost[:, cols], order, axis=1)
        cancelled = (
            np.take_along_axis(data.cancelled_cost[:, cols], order, axis=1)
            + data.cancelled_per_ms[cols][order] * took[:, None]
        )
        cost = np.where(done, finished, cancelled).sum(axis=1)
        if wait_for_all:
            # Every call voted; an accepted label is the plurality too (with θ ≤ 1/2 two labels
            # can both reach θ, and the tie goes by configured order, not by who came first).
            label = self._plurality(cols, answers, np.ones_like(done))
            if not last:
                label = np.where(accept, label, -1)
        elif last:
            # Decided early only one label can have reached θ: the one whose vote decided.
            done_in_order = np.empty_like(done)
            np.put_along_axis(done_in_order, order, done, axis=1)
            accepted = arrived[rows, stop]
            label = np.where(accept, accepted, self._plurality(cols, answers, done_in_order))
        else:
            label = np.where(accept, arrived[rows, stop], -1)
        return TierResult(accept=accept, label=label, took=took, cost=cost)

    def _plurality(
        self, cols: list[int], answers: NDArray[np.int64], done: NDArray[np.bool_]
    ) -> NDArray[np.int64]:
        """``policies.vote.plurality`` of the finished votes, in configured tier order."""
        n = answers.shape[0]
        rows = np.arange(n)
        voted = (answers >= 0) & done
        counts = ((answers[:, :, None] == answers[:, None, :]) & voted[:, None, :]).sum(axis=2)
        counts = np.where(voted, counts, 0)
        most = counts.max(axis=1)
        top = (counts == most[:, None]) & voted
        winner = np.where(most > 0, answers[rows, np.argmax(top, axis=1)], -1)
        tied = np.flatnonzero((most > 0) & (top.sum(axis=1) > most))
        logprobs = self.data.mean_logprob[:, cols]
        for row in tied:
            if np.isnan(logprobs[row]).all():
                continue  # no voter has a logprob: the first voter's label, as computed
            cast = [
                CastVote(
                    label=str(answers[row, slot]) if voted[row, slot] else None,
                    mean_logprob=None if math.isnan(lp := logprobs[row, slot]) else float(lp),
                )
                for slot in range(len(cols))
            ]
            chosen = plurality(cast)
            winner[row] = -1 if chosen is None else int(chosen)
        return winner

    def figures(self, config: CascadeConfig, tier_delay_ms: float = 0.0) -> Figures:
        if config.policy != "vote":
            raise ValueError("search evaluates the vote policy only (the replay does confidence)")
        theta = config.threshold if config.threshold is not None else 1.0
        n = self.data.size
        reached = np.ones(n, dtype=bool)
        answer = np.full(n, -1, dtype=np.int64)
        exit_tier = np.zeros(n, dtype=np.int64)
        cost = np.zeros(n)
        latency = np.zeros(n)
        endpoints = self.data.header.endpoints
        for index, tier in enumerate(config.tiers):
            last = index == len(config.tiers) - 1
            result = self.tier(tier, quorum(len(tier), theta),
                               wait_for_all=config.wait_for_all, last=last)
            delay = tier_delay_ms if any(endpoints[n].tier > 0 for n in tier) else 0.0
            cost += np.where(reached, result.cost, 0.0)
            latency += np.where(reached, result.took + delay, 0.0)
            if last:
                answer = np.where(reached, result.label, answer)
                exit_tier = np.where(reached, index, exit_tier)
            else:
                accepted = reached & result.accept
                answer = np.where(accepted, result.label, answer)
                exit_tier = np.where(accepted, index, exit_tier)
                reached = reached & ~result.accept
        return Figures(answer=answer, exit_tier=exit_tier, cost=cost, latency=latency)

    def hourly_usd(self, config: CascadeConfig, fractions: Sequence[float]) -> float | None:
        tier_prices: list[float] = []
        for tier in config.tiers:
            prices = [self.data.header.endpoints[name].hourly_usd for name in tier]
            if any(price is None for price in prices):
                return None
            tier_prices.append(math.fsum(p for p in prices if p is not None))
        return blended_hourly_usd(fractions, tier_prices)
