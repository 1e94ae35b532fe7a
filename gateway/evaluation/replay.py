"""Replaying a recording: what any cascade over its endpoints would have answered, cost and taken.

No model is called. Each simulated request is decided by the code that decides a live one,
``policies.cascade``: per tier, the recorded answers, normalised, are fed to a ``Tally`` in the
order of their recorded latencies (ties in tier order, as the live engine starts its calls), and
the tier stops at the first answer that decides it, the calls still running then being cancelled;
``Cascade`` walks the tiers, and the last one answers with its plurality. With ``wait_for_all``
every call finishes and the decision is taken on all of them (the seed paper's protocol). Costs
come from ``gateway.billing.Biller`` itself, so a cancelled call pays what a live one would: its
prompt tokens, or the GPU time it held until the decision.

Latency of a request is the sum over the tiers it reached of the time to that tier's decision. A
network delay ``d`` (``--tier-delay-ms``) is added to every tier but the first, which plays the
edge device; it delays answers, not GPU time (the seed paper's edge-to-cloud simulation, §4.2).
GPU time of a finished call is the recorded one (its share of the endpoint, as the engine meters
it); a cancelled call holds its GPU until the decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from gateway.billing import Biller
from gateway.config import PolicyName, Settings
from gateway.engine import record_cascade
from gateway.evaluation.recording import answer_spec, route_config
from gateway.outcome import RequestOutcome
from gateway.stats import percentile
from policies.answers import normalise
from policies.cascade import Arrival, Cascade, Tally
from policies.confidence import answer_probability
from policies.pricing import blended_hourly_usd
from providers.base import CallRecord
from providers.endpoint import EndpointConfig
from providers.prompting import prompt_chars

if TYPE_CHECKING:
    from collections.abc import Sequence

    from policies.cascade import TierResult
    from providers.recording import RecordedExample, Recording, RecordingHeader

Kind = Literal["single", "ensemble", "coe", "confidence"]

# Simulated requests carry no real time of their own.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_THRESHOLDS = (0.5, 2 / 3, 1.0)
CONFIDENCE_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    name: str
    kind: Kind
    tiers: tuple[tuple[str, ...], ...]
    threshold: float | None = None
    policy: PolicyName = "vote"
    wait_for_all: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    config: CascadeConfig
    accuracy: float
    cost_per_request_usd: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    # One per tier, for cascades; None for single models and whole-tier ensembles.
    exit_fractions: tuple[float, ...] | None
    # The seed paper's Table 2 "$ per hour" when every endpoint is GPU-priced, else None.
    hourly_usd: float | None
    tier_delay_ms: float = 0.0
    pareto: bool = False

    def contract_json(self) -> dict[str, Any]:
        """The row shape CONTRACT.md fixes for ``coe eval replay --format json``, plus
        ``wait_for_all``: which protocol the row simulated (true: every call of a tier finishes
        and the tier is decided on all of them; false: the early quorum, which stops a tier at
        the first answer that decides it)."""
        return {
            "config": self.config.name,
            "kind": self.config.kind,
            "threshold": None if self.config.threshold is None else round(self.config.threshold, 3),
            "accuracy": self.accuracy,
            "cost_per_request_usd": self.cost_per_request_usd,
            "latency_p50_ms": round(self.latency_p50_ms, 3),
            "exit_fractions": None if self.exit_fractions is None else list(self.exit_fractions),
            "wait_for_all": self.config.wait_for_all,
        }


@dataclass(frozen=True, slots=True)
class _Answer:
    """One endpoint's recorded answer to one example, judged as the live engine judges it."""

    status: str
    answer: str | None
    confidence: tuple[str | None, float]
    mean_logprob: float | None
    latency_ms: float
    record: CallRecord

    def arrival(self, slot: int) -> Arrival:
        return Arrival(slot, self.answer, self.mean_logprob, self.confidence)


@dataclass(frozen=True, slots=True)
class _Example:
    id: str
    label: str
    prompt_chars: int
    answers: dict[str, _Answer]


def fraction_text(theta: float) -> str:
    """θ as people write it: "2/3" for 0.667, "1" for 1.0, else the decimal."""
    close = Fraction(theta).limit_denominator(10)
    if abs(float(close) - theta) < 0.005:
        return str(close)
    return f"{theta:g}"


def settings_for(header: RecordingHeader, recording: str = "(replay)") -> Settings:
    """A config with the recording's route and prices; every endpoint answers from ``recording``."""
    gpu_prices = {
        info.gpu: info.gpu_hour_usd
        for info in header.endpoints.values()
        if info.gpu is not None and info.gpu_hour_usd is not None
    }
    endpoints = tuple(
        EndpointConfig(
            name=info.name,
            kind="replay",
            model=info.model,
            recording=recording,
            usd_per_mtok_in=info.usd_per_mtok_in,
            usd_per_mtok_out=info.usd_per_mtok_out,
            gpu=info.gpu,
            gpus=info.gpus,
        )
        for info in header.endpoints.values()
    )
    return Settings(
        endpoints=endpoints,
        routes={header.route_name: route_config(header)},
        pricing={"gpu_hour_usd": gpu_prices},  # type: ignore[arg-type]  # pydantic validates
    )


class Replayer:
    """Simulates cascades over one recording."""

    def __init__(self, recording: Recording) -> None:
        self.header = recording.header
        self._spec = answer_spec(recording.header)
        self._route = route_config(recording.header)
        self._settings = settings_for(recording.header)
        self._biller = Biller(self._settings)
        self._examples = [self._judge(example) for example in recording.examples]
        # Whether some recorded answer is priced on estimated tokens (no usage was recorded).
        self.estimated = any(
            self._biller.price(answer.record).estimated
            for example in self._examples
            for answer in example.answers.values()
            if answer.record.status == "ok"
        )

    @property
    def size(self) -> int:
        return len(self._examples)

    def _judge(self, example: RecordedExample) -> _Example:
        answers: dict[str, _Answer] = {}
        for name, call in example.calls.items():
            record = call.to_record(name)
            record.gpu_seconds = call.gpu_seconds
            answer = normalise(record.text, self._spec) if record.status == "ok" else None
            ok = record.status == "ok" and answer is not None
            answers[name] = _Answer(
                status=("ok" if ok else "unparsable") if record.status == "ok" else record.status,
                answer=answer,
                confidence=(
                    answer_probability(record.text, record.logprobs, self._spec)
                    if ok
                    else (None, 0.0)
                ),
                mean_logprob=record.mean_logprob,
                latency_ms=call.latency_ms,
                record=record,
            )
        label = normalise(example.label, self._spec) or example.label
        return _Example(example.id, label, prompt_chars(example.messages), answers)

    def simulate(
        self, index: int, config: CascadeConfig, tier_delay_ms: float = 0.0
    ) -> RequestOutcome:
        """The outcome the live engine would give example ``index`` under ``config``, billed;
        ``latency_ms`` is the simulated one."""
        example = self._examples[index]
        outcome = RequestOutcome(
            request_id=example.id,
            route=self.header.route_name,
            tenant="replay",
            created_at=_EPOCH,
            threshold=config.threshold if config.threshold is not None else 1.0,
            policy=config.policy,
        )
        elapsed = 0.0
        cascade = Cascade(len(config.tiers))
        for index in cascade:
            tier = config.tiers[index]
            result, took = self._tier(example, index, tier, config, outcome)
            elapsed += (tier_delay_ms if self._remote(tier) else 0.0) + took
            cascade.settle(result)
        record_cascade(outcome, cascade)
        outcome.latency_ms = elapsed
        self._biller.bill(outcome, self._route)
        return outcome

    def _remote(self, tier: tuple[str, ...]) -> bool:
        return any(self.header.endpoints[name].tier > 0 for name in tier)

    def _tier(
        self,
        example: _Example,
        tier_index: int,
        tier: tuple[str, ...],
        config: CascadeConfig,
        outcome: RequestOutcome,
    ) -> tuple[TierResult, float]:
        """Tier ``tier_index`` decided on the recorded answers, in simulated arrival order; its
        calls are appended to ``outcome``; the time to the decision (the last vote) comes too."""
        answers = [example.answers[name] for name in tier]
        arrival = sorted(range(len(tier)), key=lambda slot: (answers[slot].latency_ms, slot))
        tally = Tally(
            self._spec,
            len(tier),
            config.threshold if config.threshold is not None else 1.0,
            policy=config.policy,
            wait_for_all=config.wait_for_all,
        )
        result = tally.settle(answers[slot].arrival(slot) for slot in arrival)
        took = max(answers[slot].latency_ms for slot in result.voted)
        for slot, name in enumerate(tier):
            outcome.calls.append(
                self._call_record(example, name, tier_index, took, finished=slot in result.voted)
            )
        return result, took

    def _call_record(
        self, example: _Example, name: str, tier: int, took: float, *, finished: bool
    ) -> CallRecord:
        answer = example.answers[name]
        if finished:
            source = answer.record
            record = CallRecord(
                endpoint=name,
                status=answer.status,  # type: ignore[arg-type]  # a CallStatus by construction
                text=source.text,
                tokens_in=source.tokens_in,
                tokens_out=source.tokens_out,
                logprobs=source.logprobs,
                latency_ms=answer.latency_ms,
                error=source.error,
                tier=tier,
                answer=answer.answer,
                gpu_seconds=source.gpu_seconds,
            )
        else:
            gpu_priced = self.header.endpoints[name].gpu_hour_usd is not None
            record = CallRecord(
                endpoint=name,
                status="cancelled",
                latency_ms=took,
                tier=tier,
                gpu_seconds=took / 1000.0 if gpu_priced else 0.0,
            )
        record.prompt_chars = example.prompt_chars
        return record

    def evaluate(self, config: CascadeConfig, tier_delay_ms: float = 0.0) -> Row:
        if not self._examples:
            raise ValueError("the recording holds no examples")
        correct = 0
        costs: list[float] = []
        latencies: list[float] = []
        exits = [0] * len(config.tiers)
        for index, example in enumerate(self._examples):
            outcome = self.simulate(index, config, tier_delay_ms)
            correct += outcome.answer == example.label
            costs.append(outcome.cost_usd)
            latencies.append(outcome.latency_ms)
            exits[outcome.tier] += 1
        n = len(self._examples)
        fractions = tuple(count / n for count in exits)
        cascade = config.kind in ("coe", "confidence")
        return Row(
            config=config,
            accuracy=correct / n,
            cost_per_request_usd=math.fsum(costs) / n,
            latency_mean_ms=math.fsum(latencies) / n,
            latency_p50_ms=percentile(latencies, 50),
            latency_p95_ms=percentile(latencies, 95),
            exit_fractions=fractions if cascade else None,
            hourly_usd=self._hourly(config, fractions),
            tier_delay_ms=tier_delay_ms,
        )

    def _hourly(self, config: CascadeConfig, fractions: tuple[float, ...]) -> float | None:
        tier_prices: list[float] = []
        for tier in config.tiers:
            prices = [self.header.endpoints[name].hourly_usd for name in tier]
            if any(price is None for price in prices):
                return None
            tier_prices.append(math.fsum(p for p in prices if p is not None))
        return blended_hourly_usd(fractions, tier_prices)


def standard_configs(
    header: RecordingHeader,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    confidence_grid: Sequence[float] = CONFIDENCE_GRID,
    logprob_endpoints: Sequence[str] = (),
) -> list[CascadeConfig]:
    """Every single model, each tier as a whole ensemble, the CoE cascade for each θ (early quorum
    and wait-for-all), and the confidence cascade over the grid: over the route's tiers and, when
    two or more endpoints returned logprobs, over those endpoints one per tier (the classic
    single-model deferral chain)."""
    tiers = header.tiers
    configs = [
        CascadeConfig(name, "single", ((name,),), wait_for_all=True)
        for tier in tiers
        for name in tier
    ]
    configs += [
        CascadeConfig(f"tier {index} ensemble", "ensemble", (tier,), wait_for_all=True)
        for index, tier in enumerate(tiers)
        if len(tier) > 1
    ]
    for theta in dict.fromkeys(thresholds):
        base = CascadeConfig(f"coe θ={fraction_text(theta)}", "coe", tiers, theta)
        configs += [base, replace(base, name=f"{base.name} wait-all", wait_for_all=True)]
    if logprob_endpoints:
        chain = tuple((name,) for name in logprob_endpoints)
        for p in confidence_grid:
            configs.append(
                CascadeConfig(f"confidence p≥{p:g}", "confidence", tiers, p, "confidence")
            )
            if len(chain) > 1:
                configs.append(
                    CascadeConfig(
                        f"confidence chain p≥{p:g}", "confidence", chain, p, "confidence"
                    )
                )
    return configs


def logprob_endpoints(recording: Recording) -> list[str]:
    """Endpoints, in route order, that returned logprobs for at least one example."""
    return [
        name
        for name in recording.endpoint_names
        if any(example.calls[name].logprobs for example in recording.examples)
    ]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    rows: list[Row]
    # The same configurations under each requested network delay (only latency changes).
    delayed: dict[float, list[Row]]
    best_single: Row
    recommended: Row
    examples: int
    # Costs are priced on tokens estimated from text length: the recording has no usage.
    estimated: bool = False


def build_report(
    recording: Recording,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    confidence_grid: Sequence[float] = CONFIDENCE_GRID,
    tier_delays_ms: Sequence[float] = (),
) -> ReplayReport:
    replayer = Replayer(recording)
    configs = standard_configs(
        recording.header,
        thresholds=thresholds,
        confidence_grid=confidence_grid,
        logprob_endpoints=logprob_endpoints(recording),
    )
    rows = mark_pareto([replayer.evaluate(config) for config in configs])
    delayed = {
        delay: [replayer.evaluate(config, delay) for config in configs]
        for delay in dict.fromkeys(tier_delays_ms)
    }
    best_single = max(
        (row for row in rows if row.config.kind == "single"),
        key=lambda row: (row.accuracy, -row.cost_per_request_usd),
    )
    return ReplayReport(
        rows=rows,
        delayed=delayed,
        best_single=best_single,
        recommended=recommend(rows, best_single.accuracy),
        examples=replayer.size,
        estimated=replayer.estimated,
    )


def mark_pareto(rows: Sequence[Row]) -> list[Row]:
    """Mark the rows no other row beats on both accuracy and cost (ties: the cheaper wins)."""
    marked: list[Row] = []
    for row in rows:
        dominated = any(
            other.accuracy >= row.accuracy
            and other.cost_per_request_usd <= row.cost_per_request_usd
            and (
                other.accuracy > row.accuracy
                or other.cost_per_request_usd < row.cost_per_request_usd
            )
            for other in rows
        )
        marked.append(replace(row, pareto=not dominated))
    return marked


def recommend(rows: Sequence[Row], target_accuracy: float) -> Row:
    """The cheapest row at least as accurate as ``target_accuracy`` (then the more accurate,
    then the faster); the best single model itself always qualifies."""
    eligible = [row for row in rows if row.accuracy >= target_accuracy - 1e-12]
    return min(
        eligible,
        key=lambda row: (row.cost_per_request_usd, -row.accuracy, row.latency_mean_ms),
    )
