"""The quality audit's arithmetic: vote patterns, their evidence, intervals, and θ from a target.

A request that a lower tier answers leaves a **vote pattern**: the tier, the votes of its winning
label and the tier's size (``3/3``, ``2/3``, ``1/1``). Whether that answer agrees with the top
tier's is the audit's question. Evidence per pattern comes in two kinds, kept apart in reports:

- ``sample``: accepted requests picked at random and sent to the top tier as well;
- ``census``: requests that escalated anyway, so the top tier answered: their lower tiers' votes
  against its answer. Offline (``coe eval calibrate``) every request of a full-information
  recording is audited, so all its evidence is census.

Both kinds estimate the same rate (agreement given the pattern) and are pooled for the θ choice.

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

**θ from a target** (:func:`choose_threshold`). θ accepts a pattern when ``votes/size`` reaches θ
(``policies.threshold.reaches``). The rule is per pattern: θ is *supported* when it accepts at
least one pattern and every pattern it accepts has at least ``min_samples`` audited requests and a
one-sided lower confidence bound on its agreement ≥ ``target``. The gateway serves with the loosest
supported allowed θ, else (evidence missing or insufficient) the strictest allowed θ.

Why per pattern, not pooled over accepted traffic: a pooled bound lets a rare bad pattern hide
behind a common good one (3/3 at 99.5 % on 90 % of traffic covers 2/3 at 90 %), and its guarantee
holds only for the traffic mix it was measured on. Per pattern, each accepted pattern meets the
target, so any mix of them does. And it costs no multiplicity correction: θ accepts every pattern
whose ratio reaches it, so the accepted sets are nested; if the chosen θ accepts some pattern whose
true agreement is below target, it accepts the *strictest* such pattern (highest ratio) too, which
must then have passed its test, an event of probability ≤ 1 − confidence. Patterns of one ratio
are accepted together (``2/4`` and ``1/2`` in two tiers), so when g patterns share a ratio each is
tested at ``1 − (1 − confidence)/g`` (Bonferroni within the group). Hence: with probability ≥
``confidence``, every pattern the chosen θ accepts agrees with the top tier at least ``target`` of
the time, as does all traffic it serves below the top tier. Assumptions: audited requests are
exchangeable with future ones (random samples; census of a pattern = all its requests), and one
decision is taken on one body of evidence. Re-deciding as evidence accrues (the live controller)
tests repeatedly; it should decide on fixed windows, or the level holds per window only.

θ may loosen when evidence supports it and must tighten when it does not: the choice is a function
of the evidence alone, so re-running it on fresh evidence does both.

No I/O, no clock: callers count, time and store.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

from policies.threshold import reaches

if TYPE_CHECKING:
    from collections.abc import Iterable

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


# --- θ from a target -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatternBound:
    """One accepted pattern's pooled evidence, as the choice judged it."""

    pattern: VotePattern
    audited: int
    agreed: int
    # The one-sided lower bound, at ``level`` (confidence, split over patterns of equal ratio).
    lower: float
    level: float
    enough: bool  # audited ≥ min_samples
    meets: bool  # enough and lower ≥ target


@dataclass(frozen=True, slots=True)
class ThresholdOption:
    theta: float
    accepted: tuple[PatternBound, ...]
    supported: bool
    why: str


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    theta: float
    # No allowed θ is supported: the strictest is served.
    fallback: bool
    reason: str
    options: tuple[ThresholdOption, ...]  # every allowed θ, strictest first


def choose_threshold(
    allowed: Iterable[float],
    evidence: Mapping[VotePattern, PatternEvidence] | Iterable[PatternEvidence],
    target: float,
    confidence: float,
    min_samples: int,
    *,
    tier_sizes: Mapping[int, int] | None = None,
    method: IntervalMethod = "clopper-pearson",
) -> ThresholdChoice:
    """The loosest allowed θ every accepted pattern of which has ≥ ``min_samples`` audited and a
    lower bound ≥ ``target`` at ``confidence`` (the module's docstring says why that guarantees
    the target); the strictest allowed θ when none has.

    The patterns judged are every votes/size of each (tier, size) in ``tier_sizes`` (the route's
    tiers below the top) or, without it, of each (tier, size) the evidence holds: a pattern nobody
    has audited yet lacks evidence and blocks every θ that accepts it. Evidence of both kinds is
    pooled per pattern.
    """
    thetas = sorted(set(allowed), reverse=True)
    if not thetas:
        raise ValueError("give at least one allowed θ")
    if any(not 0.0 < theta <= 1.0 for theta in thetas):
        raise ValueError("every allowed θ must be in (0, 1]")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target agreement {target} must be in (0, 1]")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be in (0, 1)")
    if min_samples < 0:
        raise ValueError("min_samples must not be negative")
    pooled = _pool(evidence.values() if isinstance(evidence, Mapping) else evidence)
    pairs = (
        sorted(tier_sizes.items()) if tier_sizes is not None
        else sorted({(p.tier, p.size) for p in pooled})
    )
    patterns = [VotePattern(tier, votes, size) for tier, size in pairs for votes in range(size + 1)]
    group = Counter(p.ratio for p in patterns)
    bounds: dict[VotePattern, PatternBound] = {}
    for pattern in patterns:
        audited, agreed = pooled.get(pattern, (0, 0))
        level = 1.0 - (1.0 - confidence) / group[pattern.ratio]
        lower = lower_bound(agreed, audited, level, method)
        enough = audited >= max(min_samples, 1)
        bounds[pattern] = PatternBound(
            pattern, audited, agreed, lower, level, enough, enough and lower >= target
        )
    options = tuple(_option(theta, bounds, target, min_samples) for theta in thetas)
    supported = [option for option in options if option.supported]
    if supported:
        best = supported[-1]  # the loosest
        return ThresholdChoice(best.theta, False, best.why, options)
    strictest = options[0]
    reason = (
        f"no allowed θ is supported ({strictest.why}); serving the strictest, "
        f"θ={_theta_text(strictest.theta)}"
    )
    return ThresholdChoice(strictest.theta, True, reason, options)


def _pool(items: Iterable[PatternEvidence]) -> dict[VotePattern, tuple[int, int]]:
    pooled: dict[VotePattern, tuple[int, int]] = {}
    for item in items:
        audited, agreed = pooled.get(item.pattern, (0, 0))
        pooled[item.pattern] = (audited + item.audited, agreed + item.agreed)
    return pooled


def _option(
    theta: float, bounds: Mapping[VotePattern, PatternBound], target: float, min_samples: int
) -> ThresholdOption:
    accepted = tuple(
        sorted((b for p, b in bounds.items() if p.accepted_by(theta)),
               key=lambda b: (b.pattern.tier, -b.pattern.ratio))
    )
    name = f"θ={_theta_text(theta)}"
    if not accepted:
        return ThresholdOption(theta, accepted, False, f"{name} accepts no vote pattern")
    short = [b for b in accepted if not b.enough]
    if short:
        listed = ", ".join(f"{_where(b.pattern)} {b.audited}" for b in short)
        why = f"{name}: fewer than {max(min_samples, 1)} audited for {listed}"
        return ThresholdOption(theta, accepted, False, why)
    low = [b for b in accepted if not b.meets]
    if low:
        listed = ", ".join(f"{_where(b.pattern)} {b.lower:.4f}" for b in low)
        why = f"{name}: lower bound below {target:g} for {listed}"
        return ThresholdOption(theta, accepted, False, why)
    weakest = min(accepted, key=lambda b: b.lower)
    why = (
        f"{name}: every accepted pattern ({', '.join(_where(b.pattern) for b in accepted)}) has a "
        f"lower bound ≥ {target:g}; the weakest, {_where(weakest.pattern)}, {weakest.lower:.4f} "
        f"({weakest.agreed}/{weakest.audited} agreed)"
    )
    return ThresholdOption(theta, accepted, True, why)


def _where(pattern: VotePattern) -> str:
    return f"{pattern.text}@{pattern.tier}"


def _theta_text(theta: float) -> str:
    close = Fraction(theta).limit_denominator(10)
    return str(close) if abs(float(close) - theta) < 0.005 else f"{theta:g}"
