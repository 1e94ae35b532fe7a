"""θ from a target agreement: the loosest allowed θ whose accepted traffic provably agrees with
the top tier at least ``target`` of the time (issue 13; the live controller, ``gateway.audit``, and
``coe eval calibrate`` both call :func:`choose_threshold`).

**What is judged.** θ is judged by the agreement of the traffic it accepts: the requests whose
lower tier gave at least ``v`` of ``n`` votes to one label, where ``v`` is the fewest votes that
reach θ (cumulative patterns, "at least 2 of 3"). That is what serving with θ delivers, and it is
the only thing a live tier shows once θ is in force: with early quorum a 3-call tier at θ = 2/3
decides after two agreeing calls and records ``2/3`` whether the third would have agreed or not,
so per-pattern evidence for ``3/3`` stops accruing once θ loosens (a per-pattern rule would then
tighten, loosen, tighten…). Early abandonment has the mirror effect at a strict θ: θ = 1 escalates
as soon as two calls differ, recording ``1/3`` for a request whose third call might have made
it ``2/3``.

**Where the evidence comes from.** Each audited row carries the θ in force when its tier decided
(``AuditRow.threshold``); for a tier of ``n`` calls, θ needs ``v`` votes and the row's θ needed
``v_s``. The row's recorded votes are a lower bound on the tier's full votes, so a row whose
recorded votes reach ``v`` is a request θ accepts. Rows are read in two sources:

- **direct**: samples served at θ or looser (``v_s ≤ v``) that reach ``v``: a uniform random
  sample (the audit's ``rate``) of the traffic θ accepts, early quorum or not;
- **stricter**: rows served at a stricter θ (``v_s > v``) that reach ``v``: samples of what that θ
  accepted, and the census of what it escalated but θ would accept. Offline recordings
  (``threshold`` None: every call voted) are of this kind, census only.

Rows served looser than θ whose recorded votes do not reach ``v`` say nothing about θ (θ might
have accepted them or not) and are skipped.

**The rule.** Within the source judging θ, rows are grouped in **strata**: tier, tier size, kind
(sample or census) and recorded votes. Each stratum is a homogeneous selection: samples are drawn
at one rate from the traffic their θ accepted, census rows are every escalated request. θ is
*supported* when, for every (tier, size) with audited rows, the judging source holds at least one
stratum and every stratum has ≥ ``min_samples`` audited and a one-sided Clopper–Pearson lower
bound ≥ ``target``. Then θ's accepted traffic, a mixture of those strata, agrees at least
``target`` of the time whatever the mixture's weights, unless a stratum below target passed its
test (an intersection–union test: no correction across strata, since each must pass). Strata are
not weighted, so the audit's rate (samples) against the census's 100 % needs no correction, and a
rare bad pattern cannot hide behind a common good one when both are recorded apart (a stricter
θ's census, an offline census, or ``wait_for_all``, whose tiers record full votes). The gateway
serves the loosest supported allowed θ, else the strictest allowed θ (without evidence: until
``min_samples`` are in). Allowed θs that accept the same votes at every tier size are one
hypothesis; the others are tested at ``1 − (1 − confidence)/(h − 1)`` for h distinct hypotheses
(Bonferroni over the ones looser than the strictest, which is served anyway). Hence, with
probability ≥ ``confidence``: when θ is looser than the strictest allowed, the traffic it accepts
agrees with the top tier at least ``target`` of the time.

**Which source judges.** Per (tier, size), the most recent sufficient one (every stratum
≥ ``min_samples``): rows served at a stricter θ *after* the newest direct row (θ was tightened:
fresh census), else the direct rows (θ is in force), else every stricter row (θ has not been in
force, or has only just loosened and its own samples are still too few). So θ loosens on a stricter
θ's census, stays loose on its own samples, tightens when they fall below target, and loosens
again only on census gathered after that. With ``window``, each stratum keeps only its latest
``window`` rows, so a change in quality turns the judging source over within ``window`` audited
requests of each stratum.

**Assumptions.** Audited requests are exchangeable with those of their stratum (samples are
random; census is every escalated request); where early abandonment cut a tier short, which calls
answered first is independent of whether the answer agrees, so the escalations recorded with
enough votes represent all that θ would accept. Each decision holds its level on its evidence;
re-deciding on overlapping windows tests repeatedly, so the level holds per decision, not jointly
over time. θ ≤ 1/2 can let two labels reach θ in one tier; the recorded winner is the one judged.

No I/O, no clock: callers read, window and time the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

from policies.audit import EvidenceKind, IntervalMethod, VotePattern, lower_bound
from policies.threshold import reaches

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

Source = Literal["direct", "stricter"]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audited vote pattern of one served request, as the θ choice reads it."""

    pattern: VotePattern
    kind: EvidenceKind
    agreed: bool
    # θ in force when the tier decided; None: every call of the tier voted (an offline census).
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class StratumBound:
    """One stratum of the source that judged θ at one (tier, size), as the choice judged it."""

    pattern: VotePattern  # the recorded votes over the tier's size
    kind: EvidenceKind
    source: Source
    audited: int
    agreed: int
    lower: float  # one-sided lower bound at ``level``
    level: float
    enough: bool  # audited ≥ min_samples
    meets: bool  # enough and lower ≥ target


@dataclass(frozen=True, slots=True)
class ThresholdOption:
    theta: float
    accepted: tuple[StratumBound, ...]
    supported: bool
    why: str


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    theta: float
    # No allowed θ is supported: the strictest is served.
    fallback: bool
    reason: str
    options: tuple[ThresholdOption, ...]  # every allowed θ, strictest first


def votes_needed(theta: float, size: int) -> int:
    """The fewest votes of ``size`` that reach θ (``size + 1``: none do)."""
    return next((v for v in range(size + 1) if reaches(v / size, theta)), size + 1)


def choose_threshold(
    allowed: Iterable[float],
    rows: Sequence[AuditRow],
    target: float,
    confidence: float,
    min_samples: int,
    *,
    tier_sizes: Mapping[int, int] | None = None,
    window: int | None = None,
    method: IntervalMethod = "clopper-pearson",
) -> ThresholdChoice:
    """The loosest allowed θ supported by ``rows`` (oldest first), else the strictest allowed;
    the module's docstring gives the rule and why it guarantees the target.

    ``tier_sizes``: the route's tiers below the top, ``{tier: size}``; rows of any other (tier,
    size) come from an earlier shape of the route and are left out."""
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
    if window is not None and window < max(min_samples, 1):
        raise ValueError(f"a window of {window} rows cannot hold min_samples = {min_samples}")
    groups: dict[tuple[int, int], list[AuditRow]] = {}
    for row in rows:
        tier, size = row.pattern.tier, row.pattern.size
        if tier_sizes is None or tier_sizes.get(tier) == size:
            groups.setdefault((tier, size), []).append(row)
    hypotheses = {tuple(votes_needed(t, size) for _, size in sorted(groups)) for t in thetas}
    level = 1.0 - (1.0 - confidence) / max(1, len(hypotheses) - 1)
    judge = _Judge(target, level, max(min_samples, 1), window, method)
    options = tuple(judge.option(theta, groups) for theta in thetas)
    supported = [option for option in options if option.supported]
    if supported:
        best = supported[-1]  # the loosest
        index = options.index(best)
        # Why not looser: what the next looser θ lacks.
        reason = best.why if index == len(options) - 1 else f"{best.why}; {options[index + 1].why}"
        return ThresholdChoice(best.theta, False, reason, options)
    strictest = options[0]
    reason = (
        f"no allowed θ is supported ({strictest.why}); serving the strictest, "
        f"θ={theta_text(strictest.theta)}"
    )
    return ThresholdChoice(strictest.theta, True, reason, options)


@dataclass(frozen=True, slots=True)
class _Judge:
    target: float
    level: float
    min_samples: int
    window: int | None
    method: IntervalMethod

    def option(
        self, theta: float, groups: dict[tuple[int, int], list[AuditRow]]
    ) -> ThresholdOption:
        name = f"θ={theta_text(theta)}"
        if not groups:
            return ThresholdOption(theta, (), False, f"{name}: nothing audited yet")
        accepted: list[StratumBound] = []
        problems: list[str] = []
        for (tier, size), rows in sorted(groups.items()):
            strata = self._source(theta, size, rows)
            if strata is None:
                problems.append(f"nothing audited at tier {tier} that {name} accepts, "
                                "served at it or stricter")
                continue
            accepted.extend(strata)
            short = [b for b in strata if not b.enough]
            low = [b for b in strata if b.enough and not b.meets]
            if short:
                listed = ", ".join(f"{_where(b)} {b.audited}" for b in short)
                problems.append(f"fewer than {self.min_samples} audited for {listed}")
            if low:
                listed = ", ".join(f"{_where(b)} {b.lower:.4f}" for b in low)
                problems.append(f"lower bound below {self.target:g} for {listed}")
        if problems:
            return ThresholdOption(theta, tuple(accepted), False, f"{name}: {'; '.join(problems)}")
        weakest = min(accepted, key=lambda b: b.lower)
        why = (
            f"{name}: every stratum it accepts ({', '.join(_where(b) for b in accepted)}) has a "
            f"lower bound ≥ {self.target:g}; the weakest, {_where(weakest)}, {weakest.lower:.4f} "
            f"({weakest.agreed}/{weakest.audited} agreed)"
        )
        return ThresholdOption(theta, tuple(accepted), True, why)

    def _source(
        self, theta: float, size: int, rows: list[AuditRow]
    ) -> tuple[StratumBound, ...] | None:
        """The strata of the source judging θ at one (tier, size): the most recent sufficient
        one, else the most recent non-empty one (to say what is short); None: no usable row."""
        need = votes_needed(theta, size)
        direct: list[AuditRow] = []
        stricter: list[tuple[int, AuditRow]] = []
        newest_direct = -1
        for index, row in enumerate(rows):
            if row.pattern.votes < need:
                continue  # θ escalates it, or (served looser, cut short) it cannot be told
            served = size + 1 if row.threshold is None else votes_needed(row.threshold, size)
            if served > need:
                stricter.append((index, row))
            elif row.kind == "sample":
                direct.append(row)
                newest_direct = index
        fresh = [row for index, row in stricter if index > newest_direct]
        sources: list[tuple[Source, list[AuditRow]]] = [
            ("stricter", fresh),
            ("direct", direct),
            ("stricter", [row for _, row in stricter]),
        ]
        candidates = [self._strata(source, found) for source, found in sources if found]
        if not candidates:
            return None
        return next((c for c in candidates if all(b.enough for b in c)), candidates[0])

    def _strata(self, source: Source, rows: list[AuditRow]) -> tuple[StratumBound, ...]:
        counts: dict[tuple[VotePattern, EvidenceKind], list[bool]] = {}
        for row in rows:
            counts.setdefault((row.pattern, row.kind), []).append(row.agreed)
        bounds = []
        for (pattern, kind), outcomes in sorted(
            counts.items(), key=lambda item: (-item[0][0].votes, item[0][1])
        ):
            kept = outcomes[-self.window :] if self.window is not None else outcomes
            audited, agreed = len(kept), sum(kept)
            lower = lower_bound(agreed, audited, self.level, self.method)
            enough = audited >= self.min_samples
            bounds.append(StratumBound(
                pattern, kind, source, audited, agreed, lower, self.level, enough,
                enough and lower >= self.target,
            ))
        return tuple(bounds)


def _where(bound: StratumBound) -> str:
    return f"{bound.pattern.text}@{bound.pattern.tier} {bound.kind}"


def theta_text(theta: float) -> str:
    """θ as a short fraction where it is one (``2/3``), else as a decimal."""
    close = Fraction(theta).limit_denominator(10)
    return str(close) if abs(float(close) - theta) < 0.005 else f"{theta:g}"
