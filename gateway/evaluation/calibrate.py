"""``coe eval calibrate``: θ from a target agreement with the top tier, from one recording.

The offline twin of the live quality audit (issue 13), on the same arithmetic,
``policies.audit``. A full-information recording holds every endpoint's answer to every example,
so every request is audited: the evidence is a **census** (no sampling). For the two-tier cascade
tier 0 → top tier (the route's first and last tiers; a middle tier is left out, and a note says
so):

- the **reference** is the top tier's answer: its plurality over all its calls (one endpoint: its
  answer; ``policies.vote.plurality``'s tie rule, as the vectorised replay computes it);
- each request's **vote pattern** is tier 0's with every call back (``3/3``, ``2/3``, …: the
  winning label's votes over the tier's size), and it **agrees** when tier 0's plurality equals the
  reference. θ accepts exactly the requests whose full pattern reaches it, early quorum or not (a
  label that reaches θ by the end reached it first at some arrival; one that does not, never did),
  so one census serves every θ;
- ``policies.target.choose_threshold``, the live θ controller's rule, picks θ from the allowed
  ones: every pattern of the census is its own stratum, recorded with every call (``threshold``
  None), so a θ is judged on each pattern it accepts;
- the picked θ is then served, early quorum, by the vectorised replay
  (``gateway.evaluation.vectorised``, equal to ``coe eval replay``) and reported: its agreement
  with the top tier over the requests tier 0 answered, with a 95 % interval, and over all
  requests; its accuracy against gold; its $/request; beside top-tier-only service.

``split``: the choice is made on the even-indexed examples and the report is on the odd-indexed
half, which took no part in it (as ``coe eval search --split``). Without it both use every example,
and the held-out figures are in-sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.evaluation.replay import CascadeConfig, Kind, Row, fraction_text
from gateway.evaluation.search import Searcher
from gateway.evaluation.vectorised import CascadeArrays, RecordingArrays
from policies.audit import (
    REPORT_LEVEL,
    PatternEvidence,
    PatternReport,
    VotePattern,
    audit_report,
    clopper_pearson,
    collect_evidence,
    pattern_report,
)
from policies.target import AuditRow, ThresholdChoice, choose_threshold

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from providers.recording import Recording

DEFAULT_MIN_SAMPLES = 50


@dataclass(frozen=True, slots=True)
class Census:
    """Every example of one half: tier 0's full vote pattern and its agreement with the top."""

    votes: NDArray[np.int64]
    agreed: NDArray[np.bool_]
    size: int

    def rows(self) -> list[AuditRow]:
        """One audited row per example, full votes known; a request tier 0 cast no vote for
        escalates whatever θ, and has no pattern."""
        return [
            AuditRow(VotePattern(0, int(v), self.size), "census", bool(a))
            for v, a in zip(self.votes, self.agreed, strict=True) if v > 0
        ]

    def evidence(self) -> dict[VotePattern, PatternEvidence]:
        """Evidence per pattern (what the report shows)."""
        return collect_evidence(((row.pattern, row.agreed) for row in self.rows()), "census")

    def report_rows(self) -> list[PatternReport]:
        """Report rows, most votes first; shares are of every request of the half."""
        n = len(self.votes)
        rows = [pattern_report(item, item.audited / n) for item in self.evidence().values()]
        return sorted(rows, key=lambda row: -row.evidence.pattern.ratio)


@dataclass(frozen=True, slots=True)
class HeldOut:
    """The picked θ served (early quorum) on the held-out half."""

    row: Row
    top_only: Row
    examples: int
    accepted: int  # answered by tier 0
    accepted_agreed: int  # … in agreement with the top tier
    agreed: int  # all requests whose answer equals top-tier-only service's
    ci95: tuple[float, float]  # of the accepted requests' agreement
    census: Census

    @property
    def accepted_agreement(self) -> float | None:
        return self.accepted_agreed / self.accepted if self.accepted else None


@dataclass(frozen=True, slots=True)
class Calibration:
    route: str
    tiers: tuple[tuple[str, ...], tuple[str, ...]]
    dropped: tuple[tuple[str, ...], ...]  # middle tiers left out
    target: float
    confidence: float
    min_samples: int
    thresholds: tuple[float, ...]
    split: bool
    choosing_examples: int
    choice: ThresholdChoice
    choosing: Census
    held_out: HeldOut

    @property
    def meets_target(self) -> bool | None:
        """Whether the held-out agreement over tier 0's answers reaches the target."""
        agreement = self.held_out.accepted_agreement
        return None if agreement is None else agreement >= self.target


def census(arrays: CascadeArrays, tier0: tuple[str, ...], top: tuple[str, ...]) -> Census:
    """Tier 0's full-information pattern per example and whether its plurality is the top's."""
    data = arrays.data
    columns = [data.names.index(name) for name in tier0]
    answers = data.answer[:, columns]
    voted = answers >= 0
    same = (answers[:, :, None] == answers[:, None, :]) & voted[:, None, :]
    votes = np.where(voted, same.sum(axis=2), 0).max(axis=1).astype(np.int64)
    mine = arrays.tier(tier0, 1, wait_for_all=True, last=True).label
    reference = top_answer(arrays, top)
    return Census(votes=votes, agreed=mine == reference, size=len(tier0))


def top_answer(arrays: CascadeArrays, top: tuple[str, ...]) -> NDArray[np.int64]:
    """The top tier's answer per example: the plurality of all its calls (-1: none)."""
    return arrays.tier(top, 1, wait_for_all=True, last=True).label


def _tiers(
    recording: Recording, tiers: Sequence[Sequence[str]] | None
) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], ...]]:
    chosen = tuple(tuple(tier) for tier in (tiers if tiers is not None else recording.header.tiers))
    if len(chosen) < 2 or any(not tier for tier in chosen):
        raise ValueError("calibration needs two or more non-empty tiers (tier 0 and a top tier)")
    known = set(recording.endpoint_names)
    unknown = [name for tier in chosen for name in tier if name not in known]
    if unknown:
        raise ValueError(
            f"unknown endpoint(s) {', '.join(unknown)}; the recording has "
            f"{', '.join(recording.endpoint_names)}"
        )
    names = [name for tier in chosen for name in tier]
    if len(set(names)) != len(names):
        raise ValueError("an endpoint appears twice in the tiers")
    return (chosen[0], chosen[-1]), chosen[1:-1]


def calibrate(
    recording: Recording,
    *,
    target: float,
    confidence: float = 0.95,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    thresholds: Sequence[float] = (0.5, 2 / 3, 1.0),
    tiers: Sequence[Sequence[str]] | None = None,
    split: bool = False,
) -> Calibration:
    (tier0, top), dropped = _tiers(recording, tiers)
    data = RecordingArrays.from_recording(recording)
    if data.size < (2 if split else 1):
        raise ValueError("the recording holds too few examples")
    choosing = data.subset(range(0, data.size, 2)) if split else data
    chosen_census = census(CascadeArrays(choosing), tier0, top)
    choice = choose_threshold(
        thresholds, chosen_census.rows(), target, confidence, min_samples,
        tier_sizes={0: len(tier0)},
    )
    held = data.subset(range(1, data.size, 2)) if split else data
    return Calibration(
        route=recording.header.route_name,
        tiers=(tier0, top),
        dropped=dropped,
        target=target,
        confidence=confidence,
        min_samples=min_samples,
        thresholds=tuple(sorted(set(thresholds), reverse=True)),
        split=split,
        choosing_examples=choosing.size,
        choice=choice,
        choosing=chosen_census,
        held_out=serve(held, tier0, top, choice.theta),
    )


def serve(
    data: RecordingArrays, tier0: tuple[str, ...], top: tuple[str, ...], theta: float
) -> HeldOut:
    """Tier 0 → top at θ (early quorum) over ``data``: figures as ``coe eval replay`` gives."""
    searcher = Searcher(data)
    arrays = CascadeArrays(data)
    config = CascadeConfig(
        f"{'+'.join(tier0)} → {'+'.join(top)} θ={fraction_text(theta)}", "coe", (tier0, top), theta
    )
    kind: Kind = "single" if len(top) == 1 else "ensemble"
    top_config = CascadeConfig("+".join(top) + " (top tier alone)", kind, (top,), wait_for_all=True)
    figures = arrays.figures(config)
    reference = top_answer(arrays, top)
    served = figures.exit_tier == 0
    same = figures.answer == reference
    accepted = int(np.count_nonzero(served))
    accepted_agreed = int(np.count_nonzero(same & served))
    return HeldOut(
        row=searcher.evaluate(config),
        top_only=searcher.evaluate(top_config),
        examples=data.size,
        accepted=accepted,
        accepted_agreed=accepted_agreed,
        agreed=int(np.count_nonzero(same)),
        ci95=clopper_pearson(accepted_agreed, accepted, REPORT_LEVEL),
        census=census(arrays, tier0, top),
    )


def calibration_json(result: Calibration, recording_path: str) -> dict[str, Any]:
    held = result.held_out
    choice = result.choice
    return {
        "recording": recording_path,
        "route": result.route,
        "tiers": [list(tier) for tier in result.tiers],
        "dropped_tiers": [list(tier) for tier in result.dropped],
        "target_agreement": result.target,
        "confidence": result.confidence,
        "min_samples": result.min_samples,
        "thresholds": [fraction_text(t) for t in result.thresholds],
        "split": result.split,
        "choice": {
            "threshold": fraction_text(choice.theta),
            "fallback": choice.fallback,
            "reason": choice.reason,
            "options": [
                {
                    "threshold": fraction_text(option.theta),
                    "supported": option.supported,
                    "why": option.why,
                    "accepted": [
                        {
                            "tier": b.pattern.tier, "votes": b.pattern.text, "kind": b.kind,
                            "audited": b.audited, "agreed": b.agreed,
                            "lower_bound": round(b.lower, 6), "level": round(b.level, 6),
                        }
                        for b in option.accepted
                    ],
                }
                for option in choice.options
            ],
        },
        "choosing": {
            "examples": result.choosing_examples,
            **_audit(result, result.choosing),
        },
        "held_out": {
            "examples": held.examples,
            "threshold": fraction_text(choice.theta),
            "accepted": held.accepted,
            "accepted_fraction": round(held.accepted / held.examples, 6),
            "agreement": _round(held.accepted_agreement),
            "agreement_ci95": [round(v, 6) for v in held.ci95],
            "meets_target": result.meets_target,
            "agreement_all": round(held.agreed / held.examples, 6),
            "accuracy": held.row.accuracy,
            "cost_per_request_usd": held.row.cost_per_request_usd,
            "top_only": {
                "accuracy": held.top_only.accuracy,
                "cost_per_request_usd": held.top_only.cost_per_request_usd,
            },
            **_audit(result, held.census),
        },
    }


def _audit(result: Calibration, counted: Census) -> dict[str, Any]:
    # The offline audit calls no model: its cost is nil; no time window either.
    report = audit_report(result.route, None, None, 0.0, counted.report_rows())
    return {"patterns": report["patterns"]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def calibration_text(result: Calibration, recording_path: str) -> str:
    """The report as plain text (what ``--format table`` prints)."""
    held = result.held_out
    choice = result.choice
    chain = " → ".join("+".join(tier) for tier in result.tiers)
    lines = [
        f"coe eval calibrate {recording_path}: route {result.route!r}, {chain}",
        f"target: agreement with the top tier ≥ {result.target:g} at confidence "
        f"{result.confidence:g} (one-sided Clopper–Pearson lower bound on each vote pattern θ "
        f"accepts, ≥ {result.min_samples} audited each); allowed θ: "
        + ", ".join(fraction_text(t) for t in result.thresholds),
    ]
    if result.dropped:
        lines.append(
            "note: middle tier(s) "
            + "; ".join("+".join(tier) for tier in result.dropped)
            + " left out: calibration cascades tier 0 into the top tier"
        )
    half = "the even-indexed half" if result.split else "every example"
    lines += [
        "",
        f"Evidence: {result.choosing_examples} examples ({half}), every one audited (census)",
        *_pattern_table(result.choosing),
        "",
        "θ options (strictest first):",
        *(
            f"  {'✓' if option.supported else '✗'} {option.why}" for option in choice.options
        ),
        "",
        f"picked θ = {fraction_text(choice.theta)}"
        + (" (fallback: the strictest allowed)" if choice.fallback else ""),
        f"  {choice.reason}",
        "",
    ]
    where = (
        f"held out: the odd-indexed {held.examples} examples, not used to choose"
        if result.split else f"in-sample: all {held.examples} examples (no --split)"
    )
    agreement = held.accepted_agreement
    verdict = (
        "—" if result.meets_target is None
        else ("meets the target" if result.meets_target else "BELOW the target")
    )
    lines += [
        f"Served at θ = {fraction_text(choice.theta)}, early quorum, {where}:",
        f"  tier 0 answered {held.accepted}/{held.examples} "
        f"({held.accepted / held.examples:.1%})",
        "  agreement with the top tier over those: "
        + ("—" if agreement is None else f"{agreement:.4f}")
        + f" (95% CI {held.ci95[0]:.4f}–{held.ci95[1]:.4f}): {verdict}",
        f"  agreement with top-tier-only service over all requests: "
        f"{held.agreed / held.examples:.4f}",
        _cost_line(held),
        "  vote patterns of that half:",
        *_pattern_table(held.census),
    ]
    return "\n".join(lines)


def _cost_line(held: HeldOut) -> str:
    row, top = held.row, held.top_only
    line = f"  accuracy {row.accuracy:.4f}, ${row.cost_per_request_usd:.3g} per request"
    share = (
        f", {row.cost_per_request_usd / top.cost_per_request_usd:.0%} of its cost"
        if top.cost_per_request_usd > 0 else ""
    )
    return (
        f"{line} (top tier alone: accuracy {top.accuracy:.4f}, "
        f"${top.cost_per_request_usd:.3g} per request{share})"
    )


def _pattern_table(counted: Census) -> list[str]:
    header = (
        f"  {'tier':>4} {'votes':>5} {'kind':>6} {'audited':>7} {'agreed':>6} "
        f"{'agreement':>9} {'95% CI':^15} {'share':>6} {'gap':>7} {'gap 95% CI':^15}"
    )
    lines = [header]
    for row in counted.report_rows():
        e = row.evidence
        agreement = "—" if e.agreement is None else f"{e.agreement:.4f}"
        gap = "—" if row.gap is None else f"{row.gap:.4f}"
        lines.append(
            f"  {e.pattern.tier:>4} {e.pattern.text:>5} {e.kind:>6} {e.audited:>7} {e.agreed:>6} "
            f"{agreement:>9} {row.ci95[0]:>7.4f}–{row.ci95[1]:.4f} {row.traffic_share:>6.1%} "
            f"{gap:>7} {row.gap_ci95[0]:>7.4f}–{row.gap_ci95[1]:.4f}"
        )
    return lines
