"""Replay and live agree: a route of ``replay`` endpoints run through the live engine gives exactly
the decisions, exits and costs that ``coe eval replay`` predicts from the same recording."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from gateway.billing import Biller
from gateway.engine import CascadeEngine
from gateway.evaluation.replay import CascadeConfig, Replayer
from gateway.outcome import RequestOutcome
from gateway.plan import CoEOverrides, make_plan
from providers.http import make_http_client
from providers.recording import read_recording
from providers.registry import build_providers
from tests.eval_recordings import Answer, build_recording, route_settings, write_recording

EXAMPLES = 240
TIERS = [["s1", "s2", "s3"], ["l1", "l2"]]
PRICES = {"s1": (1.0, 2.0), "s2": (1.5, 2.0), "s3": (0.5, 1.0), "l1": (10.0, 30.0),
          "l2": (8.0, 24.0)}
# Answers in a tier arrive at least 5 ms apart, far above the event loop's jitter at this load.
SLOTS_MS = {0: (4.0, 9.0, 14.0), 1: (5.0, 10.0)}
CONCURRENT = 8


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def random_answer(rng: random.Random, label: str, latency: float, accuracy: float) -> Answer:
    other = "negative" if label == "positive" else "positive"
    roll = rng.random()
    if roll < 0.05:
        return Answer(None, latency, status="error")
    if roll < 0.12:
        return Answer("it depends", latency, tokens_in=rng.randint(40, 160), tokens_out=3)
    text = label if roll < 0.12 + accuracy * 0.88 else other
    return Answer(text, latency, tokens_in=rng.randint(40, 160), tokens_out=1)


def recording_file(tmp_path: Path) -> Path:
    rng = random.Random(20250)
    settings = route_settings(TIERS, prices=PRICES)
    rows = []
    for index in range(EXAMPLES):
        label = rng.choice(["positive", "negative"])
        answers: dict[str, Answer] = {}
        for tier, names in enumerate(TIERS):
            latencies = list(SLOTS_MS[tier])
            rng.shuffle(latencies)
            for name, latency in zip(names, latencies, strict=True):
                accuracy = 0.65 if tier == 0 else 0.85
                answers[name] = random_answer(rng, label, latency + rng.random(), accuracy)
        rows.append((f"ex{index}", f"review number {index}: " + "x" * rng.randint(0, 80), label,
                     answers))
    return write_recording(build_recording(settings, rows), tmp_path / "run.jsonl")


def summary(outcome: RequestOutcome) -> tuple[object, ...]:
    calls = tuple(
        (c.endpoint, c.tier, c.status, c.answer, round(c.cost_usd, 15)) for c in outcome.calls
    )
    return (
        outcome.answer, outcome.tier, outcome.decision, outcome.status,
        round(outcome.agreement, 9), outcome.votes, calls, round(outcome.cost_usd, 15),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("theta", [0.5, 2 / 3, 1.0])
async def test_live_engine_over_replay_endpoints_matches_the_replay(
    tmp_path: Path, theta: float
) -> None:
    path = recording_file(tmp_path)
    recording = read_recording(path)
    settings = route_settings(TIERS, prices=PRICES, recording=str(path))
    route = settings.routes["sentiment"]
    plan = make_plan("sentiment", route, CoEOverrides(threshold=theta), {})
    replayer = Replayer(recording)
    config = CascadeConfig("coe", "coe", route.tiers, theta)
    biller = Biller(settings)
    live: list[RequestOutcome | None] = [None] * EXAMPLES

    async with make_http_client() as client:
        providers = build_providers(settings.endpoints, client)
        engine = CascadeEngine(providers)

        async def run(index: int) -> None:
            example = recording.examples[index]
            outcome = await engine.run(
                plan, example.messages, request_id=example.id, tenant="test"
            )
            biller.bill(outcome, route)
            live[index] = outcome

        for start in range(0, EXAMPLES, CONCURRENT):
            async with anyio.create_task_group() as group:
                for index in range(start, min(start + CONCURRENT, EXAMPLES)):
                    group.start_soon(run, index)

    predicted = [replayer.simulate(index, config) for index in range(EXAMPLES)]
    outcomes = [o for o in live if o is not None]
    assert len(outcomes) == EXAMPLES
    mismatches = [
        (recording.examples[i].id, summary(p), summary(o))
        for i, (p, o) in enumerate(zip(predicted, outcomes, strict=True))
        if summary(p) != summary(o)
    ]
    assert not mismatches, "\n".join(
        f"{id_}:\n  replay {want}\n  live   {got}" for id_, want, got in mismatches[:3]
    )
    # The aggregate the replay table reports, from the live outcomes.
    row = replayer.evaluate(config)
    exits = tuple(sum(o.tier == t for o in outcomes) / EXAMPLES for t in range(len(TIERS)))
    assert row.exit_fractions == exits
    assert row.cost_per_request_usd == pytest.approx(sum(o.cost_usd for o in outcomes) / EXAMPLES)
    # The recording exercises every path: both tiers exit, calls get cancelled.
    assert all(0 < fraction < 1 for fraction in exits)
    assert any(c.status == "cancelled" for o in outcomes for c in o.calls) or theta == 1.0
