"""``coe eval search``: which models to cascade, and at which θ, answered from one recording.

Given a full-information recording of N endpoints, the search evaluates (vote policy only):

- every single endpoint of the recording (the baselines);
- every cascade whose tier 0 is an ensemble of 1..``max_tier0_size`` of the ``candidates`` (default:
  the recording's tier 0), in recording order, and whose top tier is one endpoint of the recording's
  last tier (or, with ``top_ensembles``, also any 2 or 3 of them), optionally with a ``middle`` tier
  between: one endpoint outside both whose single-model cost is below the top tier's;
- each for every θ of ``thresholds``, with early quorum and waiting for all.

Figures come from ``gateway.evaluation.vectorised`` (numpy over the whole recording; they equal
``Replayer.evaluate``'s). The Pareto frontier is on accuracy and $/request (no row both at least as
accurate and at most as costly, one of the two strictly); latencies (p50, p95) are shown beside it.
The recommended route is the cheapest row at least as accurate as the target (default: the best
single model's accuracy; ties: more accurate, then faster), or with ``max_cost`` the most accurate
row costing at most that (ties: cheaper, then faster).

``split``: the choice is made on the even-indexed examples (0, 2, 4, … in recording order: a fixed,
reproducible half that needs no seed) and the chosen route, with every single model, is then
evaluated on the odd-indexed half, which took no part in the choice: the held-out figures show
whether the choice generalises.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from gateway.evaluation.replay import DEFAULT_THRESHOLDS, CascadeConfig, Row, fraction_text
from gateway.evaluation.vectorised import CascadeArrays, RecordingArrays
from gateway.stats import percentile

if TYPE_CHECKING:
    from collections.abc import Sequence

    from providers.recording import Recording, RecordingHeader

DEFAULT_MAX_TIER0_SIZE = 3
_TOP_ENSEMBLE_SIZES = (2, 3)


@dataclass(frozen=True, slots=True)
class SearchSpace:
    candidates: tuple[str, ...] | None = None
    max_tier0_size: int = DEFAULT_MAX_TIER0_SIZE
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    top_ensembles: bool = False
    middle: bool = False


class Searcher:
    """Evaluates configurations over a recording (or a subset of its examples), vectorised."""

    def __init__(
        self, recording: Recording | RecordingArrays, rows: Sequence[int] | None = None
    ) -> None:
        data = (
            recording if isinstance(recording, RecordingArrays)
            else RecordingArrays.from_recording(recording)
        )
        if rows is not None:
            data = data.subset(rows)
        if data.size == 0:
            raise ValueError("the recording holds no examples")
        self.data = data
        self.header: RecordingHeader = data.header
        self._arrays = CascadeArrays(data)

    @property
    def size(self) -> int:
        return self.data.size

    def evaluate(self, config: CascadeConfig, tier_delay_ms: float = 0.0) -> Row:
        """The row ``Replayer(recording).evaluate(config, tier_delay_ms)`` gives."""
        figures = self._arrays.figures(config, tier_delay_ms)
        n = self.size
        exits = np.bincount(figures.exit_tier, minlength=len(config.tiers))
        fractions = tuple(int(count) / n for count in exits)
        cascade = config.kind in ("coe", "confidence")
        latencies = figures.latency.tolist()
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        return Row(
            config=config,
            accuracy=int(np.count_nonzero(figures.answer == self.data.gold)) / n,
            cost_per_request_usd=math.fsum(figures.cost.tolist()) / n,
            latency_mean_ms=math.fsum(latencies) / n,
            latency_p50_ms=float(p50),
            latency_p95_ms=float(p95),
            exit_fractions=fractions if cascade else None,
            hourly_usd=self._arrays.hourly_usd(config, fractions),
            tier_delay_ms=tier_delay_ms,
        )

    def singles(self) -> list[Row]:
        return [self.evaluate(config) for config in single_configs(self.header)]


def single_configs(header: RecordingHeader) -> list[CascadeConfig]:
    return [
        CascadeConfig(name, "single", ((name,),), wait_for_all=True)
        for tier in header.tiers
        for name in tier
    ]


def cascade_name(tiers: Sequence[Sequence[str]], theta: float, wait_for_all: bool) -> str:
    chain = " → ".join("+".join(tier) for tier in tiers)
    return f"{chain} θ={fraction_text(theta)}" + (" wait-all" if wait_for_all else "")


def search_configs(
    header: RecordingHeader, space: SearchSpace, single_cost: dict[str, float] | None = None
) -> list[CascadeConfig]:
    """The cascades of the search space (``single_cost``: each endpoint's $/request, needed for
    the middle tier)."""
    tiers = header.tiers
    known = [name for tier in tiers for name in tier]
    candidates = space.candidates if space.candidates is not None else tiers[0]
    unknown = [name for name in candidates if name not in known]
    if unknown:
        raise ValueError(f"unknown endpoint(s) {', '.join(unknown)}; the recording has "
                         f"{', '.join(known)}")
    if space.max_tier0_size < 1:
        raise ValueError("the tier-0 ensemble size must be at least 1")
    last = tiers[-1]
    tops: list[tuple[str, ...]] = [(name,) for name in last]
    if space.top_ensembles:
        tops += [c for size in _TOP_ENSEMBLE_SIZES for c in itertools.combinations(last, size)]
    configs: list[CascadeConfig] = []
    for top in tops:
        pool = [name for name in candidates if name not in top]
        top_cost = sum((single_cost or {}).get(name, math.inf) for name in top)
        for size in range(1, min(space.max_tier0_size, len(pool)) + 1):
            for first in itertools.combinations(pool, size):
                chains: list[tuple[tuple[str, ...], ...]] = [(first, top)]
                if space.middle and single_cost is not None:
                    chains += [
                        (first, (mid,), top)
                        for mid in known
                        if mid not in first and mid not in top and single_cost[mid] < top_cost
                    ]
                for chain in chains:
                    for theta in dict.fromkeys(space.thresholds):
                        for wait in (False, True):
                            configs.append(CascadeConfig(
                                cascade_name(chain, theta, wait), "coe", chain, theta,
                                wait_for_all=wait,
                            ))
    return configs


@dataclass(frozen=True, slots=True)
class SearchReport:
    rows: list[Row]  # singles first, then cascades; Pareto rows marked
    best_single: Row
    recommended: Row
    target: str  # what the recommendation was asked for, in words
    examples: int
    configs: int
    seconds: float
    estimated: bool  # costs estimated from text lengths (no token counts recorded)
    # --split: the recommended row, then every single model, on the held-out half.
    held_out: list[Row] | None = None
    held_out_examples: int = 0


def run_search(
    recording: Recording,
    space: SearchSpace | None = None,
    *,
    target_accuracy: float | None = None,
    max_cost: float | None = None,
    split: bool = False,
    margin: float = 0.0,
) -> SearchReport:
    started = time.perf_counter()
    space = space or SearchSpace()
    data = RecordingArrays.from_recording(recording)
    if data.size < (2 if split else 1):
        raise ValueError("the recording holds too few examples")
    choose = Searcher(data, range(0, data.size, 2)) if split else Searcher(data)
    singles = choose.singles()
    single_cost = {row.config.tiers[0][0]: row.cost_per_request_usd for row in singles}
    configs = search_configs(data.header, space, single_cost)
    rows = mark_pareto([*singles, *(choose.evaluate(config) for config in configs)])
    best = max(
        rows[: len(singles)], key=lambda row: (row.accuracy, -row.cost_per_request_usd)
    )
    if max_cost is not None:
        recommended, target = most_accurate(rows, max_cost), f"$/request ≤ {max_cost:g}"
    else:
        # ``margin``: above the best single model, so that a route clearing the bar by one lucky
        # question on the examples it was chosen on is not preferred (bench/EVAL.md, GSM8K).
        wanted = best.accuracy + margin if target_accuracy is None else target_accuracy
        recommended = cheapest(rows, wanted)
        plus = f" + {margin:.4f}" if margin else ""
        target = f"accuracy ≥ {wanted:.4f}" + (
            f" (the best single model, {best.config.name}{plus})" if target_accuracy is None else ""
        )
    held_out: list[Row] | None = None
    if split:
        other = Searcher(data, range(1, data.size, 2))
        held_out = [other.evaluate(recommended.config), *other.singles()]
    return SearchReport(
        rows=rows,
        best_single=best,
        recommended=recommended,
        target=target,
        examples=choose.size,
        configs=len(rows),
        seconds=time.perf_counter() - started,
        estimated=data.estimated,
        held_out=held_out,
        held_out_examples=data.size - choose.size if split else 0,
    )


def mark_pareto(rows: Sequence[Row]) -> list[Row]:
    """``replay.mark_pareto``'s marks (no other row at least as accurate and at most as costly,
    one strictly), in O(n log n): by cost, a row is on the frontier when it is the most accurate
    of its cost and more accurate than every cheaper row."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].cost_per_request_usd)
    marks = [False] * len(rows)
    best_cheaper = -math.inf
    for _, group in itertools.groupby(order, key=lambda i: rows[i].cost_per_request_usd):
        members = list(group)
        top = max(rows[i].accuracy for i in members)
        for i in members:
            marks[i] = rows[i].accuracy == top and top > best_cheaper
        best_cheaper = max(best_cheaper, top)
    return [replace(row, pareto=mark) for row, mark in zip(rows, marks, strict=True)]


def cheapest(rows: Sequence[Row], target_accuracy: float) -> Row:
    """The cheapest row at least as accurate as the target (then more accurate, then faster);
    when none is, the most accurate."""
    eligible = [row for row in rows if row.accuracy >= target_accuracy - 1e-12]
    if not eligible:
        return max(rows, key=lambda row: (row.accuracy, -row.cost_per_request_usd))
    return min(eligible, key=lambda r: (r.cost_per_request_usd, -r.accuracy, r.latency_mean_ms))


def most_accurate(rows: Sequence[Row], max_cost: float) -> Row:
    """The most accurate row costing at most ``max_cost`` (then cheaper, then faster); when none
    does, the cheapest."""
    eligible = [row for row in rows if row.cost_per_request_usd <= max_cost * (1 + 1e-12)]
    if not eligible:
        return min(rows, key=lambda row: (row.cost_per_request_usd, -row.accuracy))
    return min(eligible, key=lambda r: (-r.accuracy, r.cost_per_request_usd, r.latency_mean_ms))
