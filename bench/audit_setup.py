"""What the live-audit benchmarks share: scripted upstreams, the route, wrong prompts, the report.

The route has three tier-0 endpoints and one top-tier endpoint, all served by one
``bench/fake_upstream.py`` process on loopback. Every endpoint answers ``positive``; the tier-0
endpoints answer ``negative`` instead when the prompt carries ``#split``. So a prompt marked
``#split`` gets a unanimous (3/3) wrong answer at tier 0, and the top tier is always right.
Which prompts are marked is decided per prompt by a seeded hash (:func:`is_wrong`), so the share
of wrong answers is exactly ``share`` in expectation and independent of the gateway's sampling.

θ = 1: every request's tier 0 is unanimous (all three answer the same), so every request exits at
tier 0 with the pattern 3/3 and none escalates; the top tier is called by audits only.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_process import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx

ROUTE = "audited"
TIER0 = ("t0-a", "t0-b", "t0-c")
TOP = "top"
RIGHT, WRONG = "positive", "negative"
# Per million tokens; the fake upstream reports 12 tokens in and 1 out per call. The top tier is
# priced ten times tier 0, as a large model against small ones.
TIER0_USD = (0.10, 0.20)
TOP_USD = (1.00, 2.00)


@dataclass(frozen=True, slots=True)
class Upstreams:
    """The four endpoints' ports and their delays."""

    tier0_ports: tuple[int, ...]
    top_port: int
    tier0_ms: float
    top_ms: float


@contextmanager
def upstreams(tier0_ms: float, top_ms: float, folder: Path) -> Iterator[Upstreams]:
    """The fake upstream as its own process, one port per endpoint, stopped on exit."""
    ports = Upstreams(tuple(free_port() for _ in TIER0), free_port(), tier0_ms, top_ms)
    scripts = [
        f"port={port},delay_ms={tier0_ms:g},answer={RIGHT},split={WRONG}"
        for port in ports.tier0_ports
    ]
    scripts.append(f"port={ports.top_port},delay_ms={top_ms:g},answer={RIGHT}")
    command = [sys.executable, "-m", "bench.fake_upstream"]
    for script in scripts:
        command += ["--endpoint", script]
    with (folder / "upstream.log").open("w+b") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        try:
            assert process.stdout is not None
            ready = process.stdout.readline()  # printed once every port listens
            if not ready.startswith(b"fake upstream ready"):
                log.seek(0)
                raise RuntimeError(f"fake upstream did not start: {log.read().decode()[-2000:]}")
            yield ports
        finally:
            process.terminate()
            process.wait(timeout=10)


def gateway_config(
    ports: Upstreams, folder: Path, audit: dict[str, Any] | None
) -> dict[str, Any]:
    """``coe serve``'s config: the route at θ = 1 over the scripted upstreams, SQLite ledger in
    ``folder``, with ``[routes.audited.audit]`` = ``audit`` (none: no audit)."""

    def endpoint(name: str, port: int, usd: tuple[float, float]) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": f"http://127.0.0.1:{port}/v1",
            "model": name,
            "max_retries": 0,
            "usd_per_mtok_in": usd[0],
            "usd_per_mtok_out": usd[1],
        }

    route: dict[str, Any] = {
        "labels": [RIGHT, WRONG],
        "threshold": 1,
        "tiers": [list(TIER0), [TOP]],
    }
    if audit is not None:
        route["audit"] = audit
    return {
        "ledger": {"url": f"sqlite:///{folder / 'ledger.db'}"},
        "endpoints": [
            *(endpoint(n, p, TIER0_USD) for n, p in zip(TIER0, ports.tier0_ports, strict=True)),
            endpoint(TOP, ports.top_port, TOP_USD),
        ],
        "routes": {ROUTE: route},
    }


def is_wrong(seed: int, index: int, share: float) -> bool:
    """Whether prompt ``index`` of run ``seed`` gets tier 0's unanimous wrong answer: its seeded
    hash, read as a number uniform in [0, 1), falls below ``share``."""
    digest = hashlib.sha256(f"audit-bench:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def chat_body(seed: int, index: int, wrong: bool) -> dict[str, Any]:
    """A distinct prompt per request, marked ``#split`` when tier 0 is to answer wrong."""
    text = f"review {seed}-{index}: the film was fine" + (" #split" if wrong else "")
    return {"model": ROUTE, "messages": [{"role": "user", "content": text}]}


def audit_report(client: httpx.Client, route: str = ROUTE) -> dict[str, Any]:
    """``GET /v1/coe/audit?route=`` (issue 13's JSON shape)."""
    response = client.get("/v1/coe/audit", params={"route": route})
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    return report


def pattern_row(report: dict[str, Any], tier: int, votes: str, kind: str) -> dict[str, Any] | None:
    """The report's row for one pattern and kind, or None when it has none."""
    for row in report["patterns"]:
        if row["tier"] == tier and row["votes"] == votes and row["kind"] == kind:
            return dict(row)
    return None


@dataclass(frozen=True, slots=True)
class AuditCounters:
    """The gateway's sampled audits of one route, by outcome, from ``coe_audits_total``."""

    finished: int  # agree + disagree + top_failed: each has its ledger row
    failed: int  # top_failed: the top tier gave no answer
    not_run: int  # dropped (max_in_flight), paused (spend cap), no_budget, unrecorded


def audit_counters(metrics_text: str, route: str) -> AuditCounters:
    """Sum ``coe_audits_total{kind="sample"}`` of ``route`` by outcome."""
    by_outcome: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "coe_audits_total"
                and labels.get("route") == route
                and labels.get("kind") == "sample"
            ):
                by_outcome[labels["outcome"]] = by_outcome.get(labels["outcome"], 0) + sample.value
    finished = sum(by_outcome.pop(outcome, 0.0) for outcome in ("agree", "disagree"))
    failed = by_outcome.pop("top_failed", 0.0)
    return AuditCounters(int(finished + failed), int(failed), int(sum(by_outcome.values())))
