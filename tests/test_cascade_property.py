"""Live and replay cannot drift: for generated recordings, the engine running against ``replay``
endpoints and ``Replayer.simulate`` (what ``coe eval replay`` computes) give the same answer, exit
tier, decision, votes, calls and cost, request by request.

Recordings: 1–3 tiers of 1–5 endpoints, 2–10 labels, answers that are labels (in a few spellings),
unparsable texts or failures (error, timeout), small recorded latencies with ties (the replay
provider sleeps them), logprobs or none; θ in {1/3, 1/2, 2/3, 3/4, 1}, both policies, and
``wait_for_all`` on and off. The engine runs in-process (``tests/test_eval_replay_live.py`` covers
the same comparison through HTTP)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.billing import Biller
from gateway.engine import CascadeEngine
from gateway.evaluation.replay import CascadeConfig, Kind, Replayer
from gateway.outcome import RequestOutcome
from gateway.plan import CoEOverrides, make_plan
from providers.base import Provider
from providers.replay import ReplayProvider
from tests.eval_recordings import Answer, build_recording, route_settings, write_recording

LABELS = (
    "positive", "negative", "neutral", "mixed", "joy",
    "anger", "fear", "sadness", "surprise", "disgust",
)
THRESHOLDS = ("1/3", "1/2", "2/3", "3/4", "1")
SPELLINGS = ("{}", "{}", "**{}**", "Answer: {}", "{}.")
UNPARSABLE = ("it depends", "maybe", "I cannot tell", "")
LATENCIES_MS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
PROBABILITIES = (None, None, 0.2, 0.5, 0.75, 0.9, 0.99)
PRICES = ((1.0, 2.0), (0.5, 1.0), (10.0, 30.0), (0.0, 0.0))


@dataclass(frozen=True)
class Scenario:
    tiers: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]
    threshold: str
    policy: str
    wait_for_all: bool
    prices: tuple[tuple[str, tuple[float, float]], ...]
    # Per request, the answer of every endpoint.
    requests: tuple[tuple[tuple[str, Answer], ...], ...]


@st.composite
def answers(draw: st.DrawFn, labels: tuple[str, ...]) -> Answer:
    latency = draw(st.sampled_from(LATENCIES_MS))
    kind = draw(st.sampled_from(("label",) * 5 + ("unparsable", "error", "timeout")))
    if kind in ("error", "timeout"):
        return Answer(None, latency, status=kind)
    if kind == "unparsable":
        text = draw(st.sampled_from(UNPARSABLE))
    else:
        text = draw(st.sampled_from(SPELLINGS)).format(draw(st.sampled_from(labels)))
    return Answer(
        text,
        latency,
        tokens_in=draw(st.integers(1, 200)),
        tokens_out=draw(st.integers(1, 4)),
        p=draw(st.sampled_from(PROBABILITIES)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    tiers = tuple(
        tuple(f"t{tier}e{slot}" for slot in range(size)) for tier, size in enumerate(sizes)
    )
    names = [name for tier in tiers for name in tier]
    labels = LABELS[: draw(st.integers(2, len(LABELS)))]
    requests = draw(
        st.lists(
            st.tuples(*(st.tuples(st.just(name), answers(labels)) for name in names)),
            min_size=1,
            max_size=3,
        )
    )
    return Scenario(
        tiers=tiers,
        labels=labels,
        threshold=draw(st.sampled_from(THRESHOLDS)),
        policy=draw(st.sampled_from(("vote", "confidence"))),
        wait_for_all=draw(st.booleans()),
        prices=tuple((name, draw(st.sampled_from(PRICES))) for name in names),
        requests=tuple(requests),
    )


def summary(outcome: RequestOutcome) -> tuple[object, ...]:
    calls = tuple(
        (c.endpoint, c.tier, c.status, c.answer, round(c.cost_usd, 15)) for c in outcome.calls
    )
    return (
        outcome.answer, outcome.tier, outcome.decision, outcome.status,
        round(outcome.agreement, 9), outcome.votes, calls, round(outcome.cost_usd, 15),
    )


def live_and_replayed(scenario: Scenario, directory: Path) -> tuple[list[tuple[object, ...]], ...]:
    options = {
        "prices": dict(scenario.prices),
        "threshold": scenario.threshold,
        "policy": scenario.policy,
        "labels": scenario.labels,
        "wait_for_all": scenario.wait_for_all,
    }
    tiers = [list(tier) for tier in scenario.tiers]
    rows = [
        (f"r{index}", f"request number {index}", scenario.labels[0], dict(request))
        for index, request in enumerate(scenario.requests)
    ]
    recording = build_recording(route_settings(tiers, **options), rows)  # type: ignore[arg-type]
    path = write_recording(recording, directory / "run.jsonl")
    live_settings = route_settings(tiers, recording=str(path), **options)  # type: ignore[arg-type]
    route = live_settings.routes["sentiment"]
    plan = make_plan("sentiment", route, CoEOverrides(), {})
    providers: dict[str, Provider] = {
        endpoint.name: ReplayProvider(endpoint) for endpoint in live_settings.endpoints
    }
    engine = CascadeEngine(providers)
    biller = Biller(live_settings)
    live: list[RequestOutcome] = []

    async def run_all() -> None:
        for example_ in recording.examples:
            outcome = await engine.run(
                plan, example_.messages, request_id=example_.id, tenant="test"
            )
            biller.bill(outcome, route)
            live.append(outcome)

    anyio.run(run_all, backend="asyncio")
    replayer = Replayer(recording)
    kind: Kind = "confidence" if scenario.policy == "confidence" else "coe"
    config = CascadeConfig(
        "coe", kind, route.tiers, route.threshold, route.policy, route.wait_for_all
    )
    replayed = [replayer.simulate(index, config) for index in range(len(recording.examples))]
    return [summary(o) for o in live], [summary(o) for o in replayed]


def tie(answers_: tuple[str, ...], *, p: tuple[float | None, ...] | None = None) -> Scenario:
    """One tier tied between "positive" and "negative", every call back, θ = 1/2: both labels
    reach θ; the engine picks the plurality (by mean logprob, else configured order)."""
    names = tuple(f"t0e{slot}" for slot in range(len(answers_)))
    probabilities = p or (None,) * len(answers_)
    # The last endpoint answers first: arrival order must not pick the label.
    latencies = [float(len(answers_) - slot) for slot in range(len(answers_))]
    request = tuple(
        (name, Answer(text, latency, p=probability))
        for name, text, latency, probability in zip(
            names, answers_, latencies, probabilities, strict=True
        )
    )
    return Scenario(
        tiers=(names, ("t1e0",)),
        labels=("positive", "negative"),
        threshold="1/2",
        policy="vote",
        wait_for_all=True,
        prices=tuple((name, (1.0, 2.0)) for name in (*names, "t1e0")),
        requests=((*request, ("t1e0", Answer("neutral", 1.0))),),
    )


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
@example(tie(("positive", "negative")))
@example(tie(("negative", "positive")))
@example(tie(("positive", "negative", "negative", "positive")))
@example(tie(("positive", "negative", "positive", "negative"), p=(0.2, 0.9, 0.3, 0.8)))
def test_live_engine_and_replay_agree_request_by_request(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as directory:
        live, replayed = live_and_replayed(scenario, Path(directory))
    assert live == replayed


def test_the_tie_at_half_goes_to_the_first_configured_label_live_and_replayed() -> None:
    with tempfile.TemporaryDirectory() as directory:
        live, replayed = live_and_replayed(tie(("positive", "negative")), Path(directory))
    assert live == replayed
    assert live[0][:3] == ("positive", 0, "agreed")


def test_the_tie_at_half_goes_to_the_surer_label_live_and_replayed() -> None:
    probabilities = (0.2, 0.9, 0.3, 0.8)
    scenario = tie(("positive", "negative", "positive", "negative"), p=probabilities)
    with tempfile.TemporaryDirectory() as directory:
        live, replayed = live_and_replayed(scenario, Path(directory))
    assert live == replayed
    # negative's voters: mean logprob log(0.9)·½ + log(0.8)·½ > positive's.
    assert math.log(0.9) + math.log(0.8) > math.log(0.2) + math.log(0.3)
    assert live[0][:3] == ("negative", 0, "agreed")
