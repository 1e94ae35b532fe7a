"""The quality audit's arithmetic: vote patterns, their evidence, intervals, and θ from a target.

A request that a lower tier answers leaves a **vote pattern**: the tier, the votes of its winning
label and the tier's size (``3/3``, ``2/3``, ``1/1``). Whether that answer agrees with the top
tier's is the audit's question. Evidence per pattern comes in two kinds, kept apart in reports:

- ``sample``: accepted requests picked at random and sent to the top tier as well;
- ``census``: requests that escalated anyway, so the top tier answered: their lower tiers' votes
  against its answer. Offline (``coe eval calibrate``) every request of a full-information
  recording is audited, so all its evidence is census.

Both kinds estimate agreement given the pattern, but from different selections (a random share of
the accepted traffic, every escalation), so the θ choice keeps them apart as strata.

**Intervals.** Clopper–Pearson (the exact binomial interval, from the regularised incomplete beta)
is the default, for reports and for the choice: its coverage is at least the nominal level for
every n and every rate, which a guarantee needs. Wilson's score interval (also here) is shorter but
only approximately nominal: near a rate of 1 with small n, exactly where a 0.98 target lives, its
coverage dips below the level (Brown, Cai & DasGupta, *Statistical Science* 2001). Reports show
two-sided 95 % intervals; the choice uses a one-sided lower bound at ``confidence``.

**Gap.** A pattern's estimated accuracy gap against top-tier-only service is its disagreement
times its share of traffic, ``(1 − agreement) × share``; its interval is the agreement interval
mapped the same way, ``((1 − hi) × share, (1 − lo) × share)``, with the share treated as known
(it is counted over all traffic, not sampled; its own error is ignored). Disagreement bounds the
accuracy lost from above: when the two disagree the cheap answer may still be the right one. For a
census pattern (it escalated, so the top tier served it) the gap is what accepting it would add.

**θ from a target** is chosen from this evidence by ``policies.target.choose_threshold``
(cumulative patterns, judged per stratum; its docstring argues the guarantee).

No I/O, no clock: callers count, time and store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

from policies.threshold import reaches

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

EvidenceKind = Literal["sample", "census"]
IntervalMethod = Literal["clopper-pearson", "wilson"]

REPORT_LEVEL = 0.95
_BETA_EPS = 3e-16
_BETA_TINY = 1e-300
_BETA_MAX_ITERATIONS = 100_000
_BISECTIONS = 200


@dataclass(frozen=True, slots=True, order=True)
class VotePattern:
    """How a tier's vote went: ``votes`` for the winning label of ``size`` calls at ``tier``."""

    tier: int
    votes: int
    size: int

    def __post_init__(self) -> None:
        if self.tier < 0 or self.size < 1 or not 0 <= self.votes <= self.size:
            raise ValueError(
                f"no vote pattern has tier {self.tier}, {self.votes} votes of {self.size}"
            )

    @classmethod
    def of(cls, tier: int, votes: Mapping[str, int], size: int) -> VotePattern:
        """The pattern of a tier's votes per label (``TierResult.votes``)."""
        return cls(tier, max(votes.values(), default=0), size)

    @classmethod
    def parse(cls, tier: int, text: str) -> VotePattern:
        """``VotePattern.parse(0, "2/3")``."""
        votes, _, size = text.partition("/")
        try:
            return cls(tier, int(votes), int(size))
        except ValueError:
            raise ValueError(f"vote pattern {text!r} is not votes/size such as 2/3") from None

    @property
    def text(self) -> str:
        return f"{self.votes}/{self.size}"

    @property
    def ratio(self) -> Fraction:
        return Fraction(self.votes, self.size)

    def accepted_by(self, theta: float) -> bool:
        """Whether a tier that voted so is accepted at θ."""
        return reaches(self.votes / self.size, theta)


@dataclass(frozen=True, slots=True)
class PatternEvidence:
    """Audited requests of one pattern and kind, and how many agreed with the top tier."""

    pattern: VotePattern
    kind: EvidenceKind
    audited: int = 0
    agreed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.agreed <= self.audited:
            raise ValueError(f"{self.agreed} agreed of {self.audited} audited")

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.audited if self.audited else None

    def add(self, agreed: bool) -> PatternEvidence:
        """This evidence with one more audited request."""
        return PatternEvidence(self.pattern, self.kind, self.audited + 1, self.agreed + agreed)


def collect_evidence(
    observations: Iterable[tuple[VotePattern, bool]], kind: EvidenceKind
) -> dict[VotePattern, PatternEvidence]:
    """Evidence per pattern from (pattern, agreed with the top tier) pairs, patterns sorted."""
    counts: dict[VotePattern, list[int]] = {}
    for pattern, agreed in observations:
        tally = counts.setdefault(pattern, [0, 0])
        tally[0] += 1
        tally[1] += agreed
    return {
        pattern: PatternEvidence(pattern, kind, audited, agreed)
        for pattern, (audited, agreed) in sorted(counts.items())
    }


# --- intervals -------------------------------------------------------------------------------


def _check(agreed: int, n: int, confidence: float) -> None:
    if not 0 <= agreed <= n:
        raise ValueError(f"{agreed} successes of {n} trials")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function (Lentz's continued fraction)."""
    if a <= 0 or b <= 0:
        raise ValueError("the beta function needs a, b > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    def tiny(value: float) -> float:
        return value if abs(value) >= _BETA_TINY else _BETA_TINY

    c, d = 1.0, 1.0 / tiny(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, _BETA_MAX_ITERATIONS):
        even = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        d = 1.0 / tiny(1.0 + even * d)
        c = tiny(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        d = 1.0 / tiny(1.0 + odd * d)
        c = tiny(1.0 + odd / c)
        step = d * c
        h *= step
        if abs(step - 1.0) < _BETA_EPS:
            break
    return h


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, by bisection (I_x rises in x)."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if regularized_beta(middle, a, b) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _cp_lower(agreed: int, n: int, alpha: float) -> float:
    if agreed == 0:
        return 0.0
    if agreed == n:
        return float(alpha ** (1.0 / n))
    return _beta_quantile(alpha, agreed, n - agreed + 1)


def _cp_upper(agreed: int, n: int, alpha: float) -> float:
    if agreed == n:
        return 1.0
    if agreed == 0:
        return 1.0 - float(alpha ** (1.0 / n))
    return _beta_quantile(1.0 - alpha, agreed + 1, n - agreed)


def clopper_pearson(agreed: int, n: int, confidence: float = REPORT_LEVEL) -> tuple[float, float]:
    """The exact two-sided interval for a binomial rate; (0, 1) with no trials."""
    _check(agreed, n, confidence)
    if n == 0:
        return 0.0, 1.0
    alpha = (1.0 - confidence) / 2
    return _cp_lower(agreed, n, alpha), _cp_upper(agreed, n, alpha)


def wilson(agreed: int, n: int, confidence: float = REPORT_LEVEL) -> tuple[float, float]:
    """Wilson's two-sided score interval for a binomial rate; (0, 1) with no trials."""
    _check(agreed, n, confidence)
    if n == 0:
        return 0.0, 1.0
    return _wilson(agreed, n, NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2))


def _wilson(agreed: int, n: int, z: float) -> tuple[float, float]:
    p = agreed / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact at the ends (the formula's rounding can leave 1 − 1e-17 there).
    low = 0.0 if agreed == 0 else max(0.0, centre - half)
    high = 1.0 if agreed == n else min(1.0, centre + half)
    return low, high


def interval(
    agreed: int,
    n: int,
    confidence: float = REPORT_LEVEL,
    method: IntervalMethod = "clopper-pearson",
) -> tuple[float, float]:
    """The two-sided interval of ``method``."""
    if method == "clopper-pearson":
        return clopper_pearson(agreed, n, confidence)
    return wilson(agreed, n, confidence)


def lower_bound(
    agreed: int, n: int, confidence: float, method: IntervalMethod = "clopper-pearson"
) -> float:
    """The one-sided lower confidence bound at ``confidence``: the rate is at least this with
    probability ≥ ``confidence`` (exactly so for Clopper–Pearson); 0 with no trials."""
    _check(agreed, n, confidence)
    if n == 0:
        return 0.0
    if method == "clopper-pearson":
        return _cp_lower(agreed, n, 1.0 - confidence)
    return _wilson(agreed, n, NormalDist().inv_cdf(confidence))[0]


# --- reports ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatternReport:
    """One row of the audit report (issue 13's JSON shape, :meth:`to_json`)."""

    evidence: PatternEvidence
    ci95: tuple[float, float]
    traffic_share: float
    gap: float | None
    gap_ci95: tuple[float, float]

    def to_json(self, digits: int = 6) -> dict[str, Any]:
        e = self.evidence
        agreement = e.agreement
        return {
            "tier": e.pattern.tier,
            "votes": e.pattern.text,
            "kind": e.kind,
            "audited": e.audited,
            "agreed": e.agreed,
            "agreement": None if agreement is None else round(agreement, digits),
            "ci95": [round(value, digits) for value in self.ci95],
            "traffic_share": round(self.traffic_share, digits),
            "gap": None if self.gap is None else round(self.gap, digits),
            "gap_ci95": [round(value, digits) for value in self.gap_ci95],
        }


def pattern_report(
    evidence: PatternEvidence,
    traffic_share: float,
    *,
    level: float = REPORT_LEVEL,
    method: IntervalMethod = "clopper-pearson",
) -> PatternReport:
    """A pattern's agreement interval and its accuracy gap against top-tier-only service."""
    if not 0.0 <= traffic_share <= 1.0:
        raise ValueError(f"traffic share {traffic_share} must be in [0, 1]")
    low, high = interval(evidence.agreed, evidence.audited, level, method)
    agreement = evidence.agreement
    gap = None if agreement is None else (1.0 - agreement) * traffic_share
    return PatternReport(
        evidence=evidence,
        ci95=(low, high),
        traffic_share=traffic_share,
        gap=gap,
        gap_ci95=((1.0 - high) * traffic_share, (1.0 - low) * traffic_share),
    )


def audit_report(
    route: str,
    since: str | None,
    until: str | None,
    audit_cost_usd: float,
    rows: Iterable[PatternReport],
) -> dict[str, Any]:
    """The audit's JSON report; rows in (tier, votes descending, kind) order."""
    ordered = sorted(
        rows, key=lambda r: (r.evidence.pattern.tier, -r.evidence.pattern.ratio, r.evidence.kind)
    )
    return {
        "route": route,
        "since": since,
        "until": until,
        "audit_cost_usd": audit_cost_usd,
        "patterns": [row.to_json() for row in ordered],
    }
