"""The two-engine local cascade (issue "Real vLLM", item 5): SmolLM2-135M-Instruct under a real
vLLM (CPU build) beside Gemma 3 270M under llama.cpp, on SST-2 dev: the 200-sentence seeded
sample the demo ships (``gateway/demo_data/sst2-dev-200.jsonl``), since SmolLM2 under vLLM on
this 2-core machine answers about 8 sentences a minute while other work runs (all 872 would take
well over an hour).

Gemma's answers (and VADER's and TextBlob's) are already recorded in
``bench/runs/sst2-dev-zoo.jsonl`` (``coe eval record``, see bench/EVAL.md). This script records
SmolLM2 alone on the sample's sentences with ``coe eval record``'s own code against a real vLLM
server, then joins the two full-information recordings by example id into
``bench/runs/sst2-dev-two-engine.jsonl``: every endpoint answered every example independently, so
the joined file is what one run over all five endpoints would have recorded (GPU shares aside:
each endpoint was metered in its own run). ``coe eval search`` on it then compares tier-0
ensembles with and without the second engine.

    .venv/bin/python -m bench.two_engine            # needs .venv-vllm (tests/vllm_env.sh)

Writes ``bench/runs/sst2-dev-smollm2.jsonl``, ``bench/runs/sst2-dev-two-engine.jsonl`` and
``bench/results/two-engine-record.txt``.
"""

from __future__ import annotations

import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import anyio

from gateway.config import parse_settings
from gateway.evaluation.record import record_run
from gateway.evaluation.zeroeval import write_recording
from providers.recording import RecordedExample, Recording, read_recording
from tests.vllm_server import SERVED_NAME, VLLMServer, ensure_model

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "bench" / "runs" / "sst2-dev-zoo.jsonl"
SMOLLM2 = REPO / "bench" / "runs" / "sst2-dev-smollm2.jsonl"
JOINED = REPO / "bench" / "runs" / "sst2-dev-two-engine.jsonl"
LOG = REPO / "bench" / "results" / "two-engine-record.txt"


def smollm2_settings(base_url: str) -> dict[str, object]:
    # The zoo's gemma-small prompt (system prompt and example turns), same nominal hardware.
    zoo = tomllib.loads((REPO / "bench" / "zoo.toml").read_text(encoding="utf-8"))
    gemma = next(e for e in zoo["endpoints"] if e["name"] == "gemma-small")
    return {
        "ledger": {"url": "sqlite:///coe-out/two-engine.db"},
        "endpoints": [
            {
                "name": "smollm2",
                "kind": "vllm",
                "base_url": base_url,
                "model": SERVED_NAME,
                "gpu": "V100",
                "timeout_s": 120,
                "max_retries": 0,
                "max_concurrency": 4,
                "system_prompt": gemma["system_prompt"],
                "few_shot": gemma.get("few_shot", []),
            }
        ],
        "routes": {
            "sentiment": {"labels": ["positive", "negative"], "tiers": [["smollm2"]]},
        },
    }


def join(zoo: Recording, extra: Recording) -> Recording:
    """The examples of ``extra`` with both runs' endpoints: SmolLM2 joins tier 0."""
    by_id = {example.id: example for example in extra.examples}
    tiers = [list(tier) for tier in zoo.header.tiers]
    tiers[0].append("smollm2")
    route = {**zoo.header.route, "tiers": tiers}
    info = replace(extra.header.endpoints["smollm2"], tier=0)
    header = replace(
        zoo.header, route=route, endpoints={**zoo.header.endpoints, "smollm2": info}
    )
    joined = Recording(header)
    for example in zoo.examples:
        other = by_id.get(example.id)
        if other is None:
            continue
        joined.examples.append(
            RecordedExample(
                example.id,
                example.label,
                example.messages,
                {**example.calls, "smollm2": replace(other.calls["smollm2"], tier=0)},
            )
        )
    return joined


def main() -> None:
    zoo = read_recording(ZOO)
    data = REPO / "gateway" / "demo_data" / "sst2-dev-200.jsonl"
    model_dir, _ = ensure_model()
    server = VLLMServer(model_dir, REPO / "coe-out" / "vllm-two-engine.log")
    lines: list[str] = []
    began = time.perf_counter()
    server.start()
    lines.append(f"vLLM ready in {server.startup_s:.1f} s")
    try:
        raw = smollm2_settings(server.base_url)
        settings = parse_settings(raw, source="bench/two_engine.py")
        summary = anyio.run(
            lambda: record_run(settings, "sentiment", data, SMOLLM2, concurrency=4)
        )
        lines.append(f"recorded: {summary}")
    finally:
        server.stop()
    joined = join(zoo, read_recording(SMOLLM2))
    write_recording(joined, JOINED)
    lines.append(f"joined {len(joined.examples)} examples into {JOINED.relative_to(REPO)}")
    lines.append(f"wall {time.perf_counter() - began:.0f} s")
    LOG.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
