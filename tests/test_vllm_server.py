"""The ``vllm`` provider against a real vLLM server (CPU build, SmolLM2-135M-Instruct), through the
gateway's real app under uvicorn: three ``kind = "vllm"`` endpoints on that one server, each with
its own system prompt, θ = 2/3.

Slow (the server takes 30-60 s to start on 2 cores); skipped without ``.venv-vllm`` unless
``COE_REQUIRE_VLLM=1`` (CI), see ``tests/vllm_server.py``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.config import Settings, parse_settings
from providers import CallRequest, VLLMProvider, make_http_client
from providers.endpoint import EndpointConfig
from tests.gateway_server import GatewayServer
from tests.vllm_server import (
    SERVED_NAME,
    VLLMServer,
    cache_dir,
    ensure_model,
    missing_reason,
    required,
)

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
LABELS = ["positive", "negative"]
PROMPTS = {
    "smol-a": "You classify the sentiment of movie reviews. Answer with one word: positive or "
    "negative.",
    "smol-b": "You are a film critic. Read the review and say whether it is positive or negative.",
    "smol-c": "Sentiment analysis: reply positive if the text is favourable, negative otherwise.",
}
TIER = list(PROMPTS)
POSITIVE = "a gorgeous , witty , seductive movie , one of the best films of the year ."
# The slow member of the race: 400 unconstrained tokens, so it is still decoding at the quorum.
SLOW_TOKENS = 400
SLOW_BODY = {
    "structured_outputs": None,
    "max_tokens": SLOW_TOKENS,
    "min_tokens": SLOW_TOKENS,
    "ignore_eos": True,
}


def log_figure(text: str) -> None:
    """Figures for the CI log and the report, past pytest's capture."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"\n[vllm] {text}\n")
    with (cache_dir() / "figures.txt").open("a") as figures:
        figures.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    attached = os.environ.get("COE_VLLM_URL")
    if attached:
        yield VLLMServer.attach(attached)
        return
    reason = missing_reason()
    if reason is not None:
        if required():
            pytest.fail(f"COE_REQUIRE_VLLM=1 but {reason}")
        pytest.skip(reason)
    model, converted_s = ensure_model()
    server = VLLMServer(model, tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.start()
    try:
        started = time.perf_counter()
        # The first logprobs request after a start takes seconds (warm-up): not in any test.
        warm = httpx.post(
            f"{server.base_url}/chat/completions",
            json={
                "model": SERVED_NAME,
                "messages": [{"role": "user", "content": "Great film!"}],
                "max_tokens": 4,
                "logprobs": True,
                "top_logprobs": 5,
                "structured_outputs": {"choice": LABELS},
            },
            timeout=120,
        )
        warm.raise_for_status()
        log_figure(
            f"model conversion {converted_s:.1f} s (0 = cached); server ready in "
            f"{server.startup_s:.1f} s; warm-up call {time.perf_counter() - started:.1f} s"
        )
        yield server
    finally:
        stopping = time.perf_counter()
        server.stop()
        log_figure(f"server stopped in {time.perf_counter() - stopping:.1f} s")


def vllm_endpoint(name: str, server: VLLMServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "vllm",
        "base_url": server.base_url,
        "model": SERVED_NAME,
        "system_prompt": PROMPTS.get(name, PROMPTS["smol-a"]),
        "gpu": "A6000",
        "timeout_s": 120,
        "max_retries": 0,
        "breaker_failures": 0,
        **extra,
    }


def gateway_settings(server: VLLMServer, ledger: Path) -> Settings:
    endpoints = [vllm_endpoint(name, server) for name in TIER]
    endpoints += [
        vllm_endpoint("fast-1", server, system_prompt=PROMPTS["smol-a"]),
        vllm_endpoint("fast-2", server, system_prompt=PROMPTS["smol-a"]),
        vllm_endpoint("slow", server, extra_body=SLOW_BODY),
    ]
    # A generous deadline: on a loaded 2-core machine a batched tier can take many seconds.
    sentiment = {
        "labels": LABELS,
        "threshold": "2/3",
        "tiers": [TIER],
        "max_tokens": 8,
        "deadline_s": 600,
    }
    return parse_settings(
        {
            "ledger": {"url": f"sqlite:///{ledger}"},
            "endpoints": endpoints,
            "routes": {
                "sentiment": sentiment,
                "sentiment-all": {**sentiment, "wait_for_all": True},
                "race": {**sentiment, "tiers": [["fast-1", "fast-2", "slow"]]},
            },
        }
    )


def ledger_calls(ledger: Path) -> dict[str, list[dict[str, Any]]]:
    """request id → its calls, from the gateway's ledger (read after the gateway stopped)."""
    with sqlite3.connect(ledger) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT request_id, endpoint, status, tokens_in, tokens_out, latency_ms, gpu_seconds,"
            " cost_usd, estimated FROM coe_calls ORDER BY request_id, call_index"
        ).fetchall()
    calls: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        calls.setdefault(row["request_id"], []).append(dict(row))
    return calls


def ask(
    client: httpx.Client, route: str, sentence: str, **headers: str
) -> tuple[str, dict[str, Any]]:
    request_id = uuid.uuid4().hex
    response = client.post(
        "/chat/completions",
        json={"model": route, "messages": [{"role": "user", "content": sentence}]},
        headers={"x-request-id": request_id, **headers},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return request_id, body


def sentences(count: int) -> list[tuple[str, str]]:
    path = REPO / "gateway" / "demo_data" / "sst2-dev-200.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:count]]
    return [(row["prompt"], row["label"]) for row in rows]


# --- constrained choice and logprobs -----------------------------------------------------------


def test_every_answer_is_in_the_label_set_over_50_sentences(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    data = sentences(50)
    results: list[dict[str, Any] | None] = [None] * len(data)
    started = time.perf_counter()
    with GatewayServer(gateway_settings(vllm_server, tmp_path / "l.db")) as gateway:

        async def run_all() -> None:
            limit = anyio.Semaphore(4)
            async with httpx.AsyncClient(base_url=gateway.base_url, timeout=180) as client:

                async def one(index: int, sentence: str) -> None:
                    async with limit:
                        body = {"model": "sentiment", "messages": [{"role": "user",
                                                                    "content": sentence}]}
                        response = await client.post("/chat/completions", json=body)
                        assert response.status_code == 200, response.text
                        results[index] = response.json()

                async with anyio.create_task_group() as group:
                    for index, (sentence, _) in enumerate(data):
                        group.start_soon(one, index, sentence)

        anyio.run(run_all)
    elapsed = time.perf_counter() - started
    correct = 0
    for (_, label), result in zip(data, results, strict=True):
        assert result is not None
        assert result["choices"][0]["message"]["content"] in LABELS
        for call in result["coe"]["calls"]:
            if call["status"] != "cancelled":
                # Constrained decoding: every answer that came back is a label, never unparsable.
                assert call["status"] == "ok", call
                assert call["answer"] in LABELS
        correct += result["choices"][0]["message"]["content"] == label
    log_figure(f"50 SST-2 sentences through the gateway in {elapsed:.1f} s; {correct}/50 correct")


def test_real_logprobs_feed_the_confidence_policy(vllm_server: VLLMServer, tmp_path: Path) -> None:
    with GatewayServer(gateway_settings(vllm_server, tmp_path / "l.db")) as gateway, httpx.Client(
        base_url=gateway.base_url
    ) as client:
        _, body = ask(client, "sentiment-all", POSITIVE, **{"x-coe-policy": "confidence"})
    coe = body["coe"]
    assert all(call["status"] == "ok" for call in coe["calls"]), coe
    # Summed probability of the top label over the tier's size, from vLLM's own logprobs.
    assert 0 < coe["agreement"] <= 1
    assert body["choices"][0]["message"]["content"] in LABELS


# --- cancellation reaches vLLM -----------------------------------------------------------------


def test_an_early_quorum_aborts_the_slow_call_in_vllm(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    ledger = tmp_path / "l.db"
    before = vllm_server.metrics()
    with GatewayServer(gateway_settings(vllm_server, ledger)) as gateway, httpx.Client(
        base_url=gateway.base_url
    ) as client:
        request_id, body = ask(client, "race", POSITIVE)
        answered = time.perf_counter()
        statuses = {c["endpoint"]: c["status"] for c in body["coe"]["calls"]}
        assert (body["coe"]["decision"], statuses["slow"]) == ("agreed", "cancelled"), body
        # vLLM stops the request: nothing running, and no token generated any more.
        running = before["vllm:num_requests_running"] + 1
        while running > 0 and time.perf_counter() - answered < 15:
            running = vllm_server.metrics()["vllm:num_requests_running"]
            time.sleep(0.2)
        drained_s = time.perf_counter() - answered
        assert running == 0
        tokens = vllm_server.metrics()["vllm:generation_tokens_total"]
        time.sleep(2)
        after = vllm_server.metrics()
    assert after["vllm:generation_tokens_total"] == tokens
    generated = tokens - before["vllm:generation_tokens_total"]
    assert generated < SLOW_TOKENS, "the slow request ran to its end"
    slow = next(c for c in ledger_calls(ledger)[request_id] if c["endpoint"] == "slow")
    # Billed the GPU time it held until it was cancelled, and marked estimated.
    assert slow["status"] == "cancelled"
    assert slow["estimated"]
    assert 0 < slow["gpu_seconds"] <= slow["latency_ms"] / 1000 + 0.01
    assert slow["cost_usd"] > 0
    log_figure(
        f"race: answered, vLLM idle {drained_s:.2f} s later; {generated:.0f} tokens generated in "
        f"all (slow member asked for {SLOW_TOKENS}); slow billed {slow['gpu_seconds']:.3f} GPU-s "
        f"over {slow['latency_ms'] / 1000:.3f} s held"
    )


# --- GPU-time billing and usage against vLLM's metrics -----------------------------------------


def run_tier_requests(
    server: VLLMServer, ledger: Path, count: int
) -> list[tuple[dict[str, float], list[dict[str, Any]], dict[str, Any]]]:
    """``count`` requests, one after another, each calling the three endpoints at once and
    waiting for all; per request, vLLM's metric deltas, the ledger's calls and the response."""
    deltas: list[tuple[str, dict[str, float], dict[str, Any]]] = []
    with GatewayServer(gateway_settings(server, ledger)) as gateway, httpx.Client(
        base_url=gateway.base_url
    ) as client:
        for sentence, _ in sentences(count):
            before = server.metrics()
            request_id, body = ask(client, "sentiment-all", sentence)
            after = server.metrics()
            deltas.append((request_id, {k: after[k] - before.get(k, 0.0) for k in after}, body))
    calls = ledger_calls(ledger)
    return [(delta, calls[request_id], body) for request_id, delta, body in deltas]


def test_gpu_time_shares_match_vllms_own_request_timings(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    rows = run_tier_requests(vllm_server, tmp_path / "l.db", 5)
    lines = []
    for delta, calls, _ in rows:
        assert delta["vllm:e2e_request_latency_seconds_count"] == 3
        vllm_e2e = delta["vllm:e2e_request_latency_seconds_sum"]
        held = [c["latency_ms"] / 1000 for c in calls]
        billed = sum(c["gpu_seconds"] for c in calls)
        assert all(not c["estimated"] for c in calls)
        # vLLM times each request inside the gateway's call: never more than the gateway waited.
        assert vllm_e2e <= sum(held) + 0.01
        # The three batched requests run side by side, so the server was busy for about their
        # mean e2e time, which is what their shares must add up to. Tolerance: the gateway's
        # call also holds the HTTP exchange, JSON and vLLM's API-server work around the engine's
        # timing (loopback: 0.04-0.07 s on this 2-core machine idle, 0.20 s once in a fresh-clone
        # run of the whole suite), and the three requests do not start and end in exactly the
        # same engine step. Billing each call its own time would be three times ``busy`` and more.
        busy = vllm_e2e / 3
        assert busy - 0.01 <= billed <= busy * 1.25 + 0.25, (billed, busy)
        lines.append(f"billed {billed:.3f} GPU-s vs vLLM e2e/3 {busy:.3f} s")
    log_figure("tier of 3 on one server: " + "; ".join(lines))


def test_endpoints_on_one_server_are_billed_its_wall_time_once(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    for _, calls, _ in run_tier_requests(vllm_server, tmp_path / "l.db", 3):
        held = [c["latency_ms"] / 1000 for c in calls]
        billed = sum(c["gpu_seconds"] for c in calls)
        # Shared per server (one meter key for its base_url): the shares of the three concurrent
        # calls add up to the time they overlapped, the longest call, not three times it.
        assert max(held) * 0.9 - 0.01 <= billed <= max(held) + 0.05, (billed, held)
        assert billed < 0.6 * sum(held)


def test_usage_tokens_equal_vllms(vllm_server: VLLMServer, tmp_path: Path) -> None:
    for delta, calls, body in run_tier_requests(vllm_server, tmp_path / "l.db", 2):
        tokens_in = sum(c["tokens_in"] for c in calls)
        tokens_out = sum(c["tokens_out"] for c in calls)
        assert tokens_in == delta["vllm:prompt_tokens_total"]
        assert tokens_out == delta["vllm:generation_tokens_total"]
        assert body["usage"]["prompt_tokens"] == tokens_in
        assert body["usage"]["completion_tokens"] == tokens_out


# --- the choice field, by the server's version -------------------------------------------------


@pytest.mark.anyio
async def test_a_forced_guided_choice_is_corrected_against_vllm_0_32(
    vllm_server: VLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    odd = ("zebra-stripes", "quokka-smile")
    request = CallRequest(
        messages=({"role": "user", "content": f"Is this review positive or negative? {POSITIVE}"},),
        max_tokens=8,
        answer_set=odd,
    )
    async with make_http_client() as client:
        # The server itself ignores guided_choice: asked raw, it answers outside the set.
        raw = await client.post(
            f"{vllm_server.base_url}/chat/completions",
            json={
                "model": SERVED_NAME,
                "messages": list(request.messages),
                "max_tokens": 8,
                "guided_choice": list(odd),
            },
            timeout=120,
        )
        assert raw.json()["choices"][0]["message"]["content"] not in odd
        config = vllm_endpoint("forced", vllm_server, vllm_choice_field="guided_choice")
        forced = VLLMProvider(EndpointConfig(**config), client)
        auto = VLLMProvider(EndpointConfig(**vllm_endpoint("auto", vllm_server)), client)
        with caplog.at_level(logging.WARNING, logger="providers.vllm"):
            forced_record = await forced.complete(request)
            auto_record = await auto.complete(request)
    assert forced.server_version is not None and forced.server_version.startswith("0.32")
    assert (forced.choice_field, auto.choice_field) == ("structured_outputs", "structured_outputs")
    assert forced_record.text in odd and auto_record.text in odd
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "guided_choice" in warnings[0] and "0.32" in warnings[0]
