"""Throughput of a 3-member tier on one vLLM server, as the gateway bills it against vLLM's metrics.

Starts vLLM (``tests/vllm_server.py``: ``.venv-vllm`` or ``COE_VLLM_VENV``, the converted SmolLM2
folder or ``COE_VLLM_MODEL_DIR``; or uses the one at ``COE_VLLM_URL``) and the gateway with three
``kind = "vllm"`` endpoints on it (distinct system prompts, θ = 2/3, early quorum), sends
``--requests`` SST-2 sentences ``--concurrency`` at a time, and prints one row:

- cascades/s: requests answered per second of wall time;
- billed GPU-s/request: the gateway's GPU seconds (its time shares, from the ledger) per request;
- vLLM e2e-s/request: ``vllm:e2e_request_latency_seconds_sum`` growth per request (each request's
  own time, overlapping ones counted each: an upper bound of the busy time);
- wall-s/request: the run's wall time per request (a lower bound of the busy time a request
  causes when the server is saturated).

    python bench/vllm_throughput.py --requests 200 --concurrency 16 --gpu H100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import parse_settings
from tests.gateway_server import GatewayServer
from tests.vllm_server import SERVED_NAME, VLLMServer, cache_dir, ensure_model

PROMPTS = (
    "You classify the sentiment of movie reviews. Answer with one word: positive or negative.",
    "You are a film critic. Read the review and say whether it is positive or negative.",
    "Sentiment analysis: reply positive if the text is favourable, negative otherwise.",
)
DATA = Path(__file__).resolve().parents[1] / "gateway" / "demo_data" / "sst2-dev-200.jsonl"


def settings(base_url: str, ledger: Path, gpu: str) -> object:
    names = [f"smol-{i}" for i in range(len(PROMPTS))]
    return parse_settings(
        {
            "ledger": {"url": f"sqlite:///{ledger}"},
            "endpoints": [
                {
                    "name": name,
                    "kind": "vllm",
                    "base_url": base_url,
                    "model": SERVED_NAME,
                    "system_prompt": prompt,
                    "gpu": gpu,
                    "timeout_s": 300,
                    "max_retries": 0,
                    "max_concurrency": 256,
                }
                for name, prompt in zip(names, PROMPTS, strict=True)
            ],
            "routes": {
                "sentiment": {
                    "labels": ["positive", "negative"],
                    "threshold": "2/3",
                    "tiers": [names],
                    "max_tokens": 8,
                    "deadline_s": 600,
                }
            },
        }
    )


async def drive(base_url: str, sentences: list[str], concurrency: int) -> None:
    limit = anyio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def one(sentence: str) -> None:
            async with limit:
                body = {"model": "sentiment", "messages": [{"role": "user", "content": sentence}]}
                response = await client.post("/chat/completions", json=body)
                response.raise_for_status()

        async with anyio.create_task_group() as group:
            for sentence in sentences:
                group.start_soon(one, sentence)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--gpu", default="A6000", help="a key of the default GPU-hour price table")
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    sentences = [rows[i % len(rows)]["prompt"] for i in range(args.requests)]
    attached = os.environ.get("COE_VLLM_URL")
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger.db"
        if attached:
            server, stack = VLLMServer.attach(attached), contextlib.nullcontext()
        else:
            server = VLLMServer(ensure_model()[0], cache_dir() / "throughput-vllm.log")
            stack = server  # type: ignore[assignment]
        with stack:
            # Warm-up, outside the measurement.
            httpx.post(
                f"{server.base_url}/chat/completions",
                json={"model": SERVED_NAME, "max_tokens": 4, "logprobs": True,
                      "messages": [{"role": "user", "content": "Great film!"}]},
                timeout=300,
            ).raise_for_status()  # fmt: skip
            before = server.metrics()
            with GatewayServer(settings(server.base_url, ledger, args.gpu)) as gateway:  # type: ignore[arg-type]
                started = time.perf_counter()
                anyio.run(drive, gateway.base_url, sentences, args.concurrency)
                wall = time.perf_counter() - started
            after = server.metrics()
        with sqlite3.connect(ledger) as db:
            billed, requests = db.execute(
                "SELECT SUM(gpu_seconds), COUNT(DISTINCT request_id) FROM coe_calls"
            ).fetchone()
    e2e = after["vllm:e2e_request_latency_seconds_sum"] - before.get(
        "vllm:e2e_request_latency_seconds_sum", 0.0
    )
    n = args.requests
    print(
        f"tier=3x{SERVED_NAME} requests={n} concurrency={args.concurrency} "
        f"cascades/s={n / wall:.2f} billed_gpu_s/request={billed / requests:.4f} "
        f"vllm_e2e_s/request={e2e / n:.4f} wall_s/request={wall / n:.4f} "
        f"startup_s={server.startup_s:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
