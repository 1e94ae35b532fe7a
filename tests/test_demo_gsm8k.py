"""``coe demo``: the recorded models answer the openai SDK over HTTP, and the demo's live figures
equal ``coe eval replay``'s and the gateway's own cost report, exactly."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import openai
import pytest
from rich.console import Console

from gateway.commands import demo as demo_command
from gateway.evaluation.demo import ChosenRoute, fraction_text, live_config, run_demo
from gateway.evaluation.model_server import serve_recorded_models
from gateway.evaluation.replay import Replayer
from providers.recording import Recording, read_recording
from tests.eval_recordings import Answer, build_recording, route_settings

BUNDLED = Path(__file__).parents[1] / "gateway" / "demo_data" / "gsm8k-zeroeval.jsonl.gz"
SHARED = Path(__file__).parents[2] / "shared" / "data" / "gsm8k-zeroeval"
SLICE = 100


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gsm8k() -> Recording:
    if BUNDLED.exists():
        return read_recording(BUNDLED)
    if (SHARED / "answers.jsonl").exists():
        from gateway.evaluation.zeroeval import convert_gsm8k_zeroeval

        return convert_gsm8k_zeroeval(SHARED)
    pytest.skip(f"neither the bundled {BUNDLED.name} nor {SHARED} is here")


def small_recording() -> Recording:
    settings = route_settings([["a", "b"], ["c"]], prices={"a": (1.0, 2.0), "c": (5.0, 10.0)})
    return build_recording(settings, [
        ("q1", "is this good?", "positive", {
            "a": Answer("Positive!", 5.0, tokens_in=7, tokens_out=2),
            "b": Answer(None, 3.0, status="error"),
            "c": Answer("negative", 8.0, tokens_in=None, tokens_out=None),
        }),
    ])


@pytest.mark.anyio
async def test_recorded_models_answer_the_openai_sdk() -> None:
    recording = small_recording()
    messages = [{"role": "user", "content": "is this good?"}]
    async with serve_recorded_models(recording, speed=10.0) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url("a"), api_key="none", max_retries=0)
        async with client:
            answer = await client.chat.completions.create(model="ignored", messages=messages)
            assert answer.choices[0].message.content == "Positive!"
            assert answer.model == "a"
            assert answer.usage is not None
            assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 2)
            assert [m.id for m in (await client.models.list()).data] == ["a"]
            with pytest.raises(openai.NotFoundError, match="no recorded answer"):
                await client.chat.completions.create(
                    model="a", messages=[{"role": "user", "content": "never asked"}]
                )
        # No token counts recorded: no usage, so the gateway estimates them as a replay does.
        client = openai.AsyncOpenAI(base_url=server.base_url("c"), api_key="none", max_retries=0)
        async with client:
            answer = await client.chat.completions.create(model="c", messages=messages)
            assert answer.choices[0].message.content == "negative"
            assert answer.usage is None
        # A call recorded as failed fails again, after its latency.
        client = openai.AsyncOpenAI(base_url=server.base_url("b"), api_key="none", max_retries=0)
        async with client:
            with pytest.raises(openai.InternalServerError, match="failed here when recorded"):
                await client.chat.completions.create(model="b", messages=messages)
        # One server for every model; the body's model picks it on the plain path.
        client = openai.AsyncOpenAI(base_url=f"{server.root}/v1", api_key="none", max_retries=0)
        async with client:
            answer = await client.chat.completions.create(model="a", messages=messages)
            assert answer.choices[0].message.content == "Positive!"
            assert {m.id for m in (await client.models.list()).data} == {"a", "b", "c"}


def fixed_route(recording: Recording) -> ChosenRoute:
    """A route like the search's pick, with an ensemble on top too (ties in the last tier)."""
    return ChosenRoute(
        tiers=(("gemini-1.5-flash", "llama-3.1-8b", "gpt-4o-mini"),
               ("gemini-1.5-pro", "gpt-4o-0806")),
        threshold=2 / 3,
        chosen_on=0,
        held_out=Recording(recording.header, recording.examples[1::2]),
        summary="(fixed for the test)",
    )


@pytest.mark.anyio
async def test_live_figures_equal_the_replay_and_the_ledger(
    gsm8k: Recording, tmp_path: Path
) -> None:
    route = fixed_route(gsm8k)
    console = Console(record=True, width=200)
    result = await run_demo(gsm8k, tmp_path, route=route, limit=SLICE, speed=200.0,
                            plot=False, console=console)
    held_out = Recording(gsm8k.header, gsm8k.examples[1::2][:SLICE])
    replayer = Replayer(held_out)
    printed = console.export_text()
    assert [p.threshold for p in result.passes] == [2 / 3, 1.0]
    for live in result.passes:
        assert live.questions == SLICE and live.failed == 0 and live.lost_calls == 0
        expected = replayer.evaluate(live_config(route, live.threshold))
        assert live.accuracy == expected.accuracy
        assert live.exit_fractions == expected.exit_fractions
        assert live.cost_per_question_usd == expected.cost_per_request_usd
        # The gateway's ledger: every request, its exits and the sum of the answers' costs.
        totals = live.report["totals"]
        assert totals["requests"] == SLICE
        assert live.report["exits_by_tier"] == {str(t): n for t, n in enumerate(live.exits)}
        assert totals["cost_usd"] == round(math.fsum(live.costs), 10)
        # What is printed is these figures.
        theta = fraction_text(live.threshold)
        assert f"CoE θ={theta}, live" in printed
        assert f"${live.cost_per_question_usd:.6f}" in printed
        assert f"${totals['cost_usd']:.6f}" in printed
        assert f"{live.report['counterfactual']['savings_ratio']:.1%}" in printed
        assert f"of θ = {theta} (wait-all)" in printed
    assert printed.count("identical to the live pass") == 2
    assert "DIFFERENT" not in printed


def test_coe_demo_end_to_end_on_a_slice(gsm8k: Recording, tmp_path: Path) -> None:
    """The command as a user runs it (the search picks the route), on 24 held-out questions."""
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--limit", "24", "--out-dir", str(tmp_path),
                              "--speed", "200"])
    console = Console(record=True, width=200)
    result = demo_command.demo(args, console=console)
    printed = console.export_text()
    assert "coe eval search --split" in printed
    assert len(result.route.held_out.examples) == 24
    for row in result.singles:
        assert f"{row.accuracy:.1%}" in printed and f"${row.cost_per_request_usd:.6f}" in printed
    for live, line in zip(result.passes, result.verdicts, strict=True):
        assert line in printed.replace("\n", " ") or line[:60] in printed
        cells = [f"{live.accuracy:.1%}", *(f"{f:.1%}" for f in live.exit_fractions),
                 f"${live.cost_per_question_usd:.6f}"]
        row = next(r for r in printed.splitlines()
                   if f"CoE θ={fraction_text(live.threshold)}, live" in r)
        assert all(cell in row for cell in cells), (row, cells)
    assert printed.count("identical to the live pass") == 2
    assert result.plot is not None and result.plot.stat().st_size > 10_000
