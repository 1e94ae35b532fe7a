"""Metrics on hand-made outcomes, read back through Prometheus' own text parser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.outcome import RequestOutcome
from providers.base import CallRecord, CallStatus


def call(endpoint: str, status: CallStatus = "ok", **fields: Any) -> CallRecord:
    defaults: dict[str, Any] = {"latency_ms": 40.0, "cost_usd": 0.001, "tokens_in": 10,
                                "tokens_out": 2}
    return CallRecord(endpoint=endpoint, status=status, **{**defaults, **fields})


def outcome(*calls: CallRecord, **fields: Any) -> RequestOutcome:
    defaults: dict[str, Any] = {
        "request_id": "r1", "route": "sentiment", "tenant": "acme",
        "created_at": datetime(2025, 1, 1, tzinfo=UTC), "threshold": 0.66, "policy": "vote",
        "latency_ms": 120.0,
    }
    return RequestOutcome(calls=list(calls), **{**defaults, **fields})


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    payload, _ = metrics.render()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(payload.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def test_requests_are_counted_by_route_exit_tier_decision_and_status() -> None:
    metrics = Metrics()

    metrics.observe(outcome(tier=0, decision="agreed"))
    metrics.observe(outcome(tier=0, decision="agreed"))
    metrics.observe(outcome(tier=1, decision="escalated"))

    assert value(metrics, "coe_requests_total", route="sentiment", tier="0",
                 decision="agreed", status="ok") == 2
    assert value(metrics, "coe_requests_total", route="sentiment", tier="1",
                 decision="escalated", status="ok") == 1


def test_failed_requests_carry_their_status() -> None:
    metrics = Metrics()

    metrics.observe(outcome(tier=1, decision="last_tier", status="upstream_failed"))

    assert value(metrics, "coe_requests_total", route="sentiment", tier="1",
                 decision="last_tier", status="upstream_failed") == 1


def test_upstream_calls_are_counted_by_endpoint_and_status() -> None:
    metrics = Metrics()

    metrics.observe(outcome(call("small-a"), call("small-b", "error"), call("small-c", "timeout")))
    metrics.observe(outcome(call("small-a")))

    assert value(metrics, "coe_upstream_calls_total", endpoint="small-a", status="ok") == 2
    assert value(metrics, "coe_upstream_calls_total", endpoint="small-b", status="error") == 1
    assert value(metrics, "coe_upstream_calls_total", endpoint="small-c", status="timeout") == 1


def test_request_latency_histogram_is_in_seconds_by_route() -> None:
    metrics = Metrics()

    metrics.observe(outcome(latency_ms=120.0))

    assert value(metrics, "coe_request_duration_seconds_count", route="sentiment") == 1
    assert value(metrics, "coe_request_duration_seconds_sum", route="sentiment") == (
        pytest.approx(0.12)
    )
    assert value(metrics, "coe_request_duration_seconds_bucket", route="sentiment",
                 le="0.1") == 0
    assert value(metrics, "coe_request_duration_seconds_bucket", route="sentiment",
                 le="0.25") == 1


def test_call_latency_histogram_skips_cancelled_calls() -> None:
    metrics = Metrics()

    metrics.observe(outcome(call("small-a", latency_ms=30.0),
                            call("small-b", "cancelled", latency_ms=900.0)))

    assert value(metrics, "coe_upstream_call_duration_seconds_sum", endpoint="small-a") == (
        pytest.approx(0.03)
    )
    assert ("coe_upstream_call_duration_seconds_count",
            frozenset({("endpoint", "small-b")})) not in samples(metrics)


def test_cost_is_counted_by_tenant_and_endpoint() -> None:
    metrics = Metrics()

    metrics.observe(outcome(call("small-a", cost_usd=0.002), call("large", cost_usd=0.05)))
    metrics.observe(outcome(call("small-a", cost_usd=0.001), tenant="globex"))

    assert value(metrics, "coe_cost_usd_total", tenant="acme", endpoint="small-a") == (
        pytest.approx(0.002)
    )
    assert value(metrics, "coe_cost_usd_total", tenant="acme", endpoint="large") == (
        pytest.approx(0.05)
    )
    assert value(metrics, "coe_cost_usd_total", tenant="globex", endpoint="small-a") == (
        pytest.approx(0.001)
    )


def test_tokens_are_counted_by_direction_and_unknown_usage_adds_nothing() -> None:
    metrics = Metrics()

    metrics.observe(outcome(call("small-a", tokens_in=10, tokens_out=2),
                            call("small-b", tokens_in=None, tokens_out=None)))

    assert value(metrics, "coe_tokens_total", tenant="acme", endpoint="small-a",
                 direction="in") == 10
    assert value(metrics, "coe_tokens_total", tenant="acme", endpoint="small-a",
                 direction="out") == 2
    assert not any(name == "coe_tokens_total" and ("endpoint", "small-b") in labels
                   for name, labels in samples(metrics))


def test_counterfactual_cost_is_counted_by_tenant_and_route() -> None:
    metrics = Metrics()

    metrics.observe(outcome(counterfactual_usd=0.04))

    assert value(metrics, "coe_counterfactual_cost_usd_total", tenant="acme",
                 route="sentiment") == pytest.approx(0.04)


def test_breaker_state_is_one_hot() -> None:
    metrics = Metrics()

    metrics.set_breaker_state("large", "closed")
    metrics.set_breaker_state("large", "open")

    states = {s: value(metrics, "coe_circuit_breaker_state", endpoint="large", state=s)
              for s in ("closed", "open", "half_open")}
    assert states == {"closed": 0, "open": 1, "half_open": 0}


def test_unknown_breaker_state_is_refused() -> None:
    with pytest.raises(ValueError, match="half-open"):
        Metrics().set_breaker_state("large", "half-open")


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()

    first.observe(outcome())

    assert ("coe_requests_total", frozenset({("route", "sentiment"), ("tier", "0"),
            ("decision", "agreed"), ("status", "ok")})) not in samples(second)


def test_render_gives_the_prometheus_text_content_type() -> None:
    payload, content_type = Metrics().render()

    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE coe_requests_total counter" in payload
