"""OpenTelemetry traces, checked against a real OTLP/HTTP receiver on loopback that decodes the
protobuf the gateway's exporter sends (tests/otlp_receiver.py)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from gateway.api import create_app
from gateway.config import Settings, TelemetryConfig, parse_settings
from gateway.telemetry import TraceMiddleware, open_tracing, tracing_wanted
from tests.conftest import cascade_config
from tests.gateway_server import GatewayServer
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan, render, tree
from tests.upstream import Gate, Reply, UpstreamServer

REVIEW = [{"role": "user", "content": "Review: a delight from start to finish. Sentiment?"}]
SHOWN = (
    "coe.decision",
    "coe.exit_tier",
    "coe.tier.index",
    "coe.tier.decision",
    "coe.tier.votes",
    "coe.call.status",
    "coe.call.cancelled",
)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture
def traced_settings(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, receiver: OTLPReceiver
) -> Callable[..., Settings]:
    def build(**route: Any) -> Settings:
        raw = cascade_config(upstreams, tmp_path / "ledger.db", **route)
        raw["telemetry"] = {"otlp_endpoint": receiver.endpoint}
        return parse_settings(raw)

    return build


def ask(gateway: GatewayServer, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0) as client:
        response = client.chat.completions.create(
            model="sentiment",
            messages=REVIEW,  # type: ignore[arg-type]
            extra_headers=headers,
        )
    return response.model_dump()


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans}


def test_an_escalated_request_is_one_trace_under_the_clients_traceparent(
    traced_settings: Callable[..., Settings],
    upstreams: dict[str, UpstreamServer],
    receiver: OTLPReceiver,
) -> None:
    # Tier 0 cannot reach θ = 1 once small-a and small-b disagree: it escalates, and small-c,
    # held upstream, is cancelled. The large model answers alone at tier 1.
    upstreams["small-b"].answer("negative")
    held = Gate()
    upstreams["small-c"].script(Reply(content="positive", gate=held))
    upstreams["large"].answer("negative")
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)

    with GatewayServer(traced_settings(threshold=1)) as gateway:
        body = ask(gateway, {"traceparent": f"00-{trace_id}-{client_span}-01"})
        held.open()
    # Leaving the server ran the lifespan's close: the batch processor exported everything.

    assert body["coe"]["decision"] == "escalated"
    spans = receiver.trace(trace_id)
    assert {span.trace_id for span in receiver.spans} == {trace_id}
    roots = tree(spans)
    assert len(roots) == 1, render(roots, SHOWN)
    request = roots[0]
    assert request.parent_span_id == client_span
    assert request.name == "POST /v1/chat/completions"
    assert request.kind == "SERVER"
    assert request.resource["service.name"] == "coe-gateway"
    assert request.attributes["http.route"] == "/v1/chat/completions"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["coe.route"] == "sentiment"
    assert request.attributes["coe.tenant"] == "default"
    assert request.attributes["coe.decision"] == "escalated"
    assert request.attributes["coe.exit_tier"] == 1
    assert request.attributes["coe.threshold"] == 1.0
    assert request.attributes["coe.agreement"] == 1.0
    assert request.attributes["coe.cost_usd"] == pytest.approx(body["coe"]["cost_usd"])
    assert request.attributes["coe.request_id"] == body["id"].removeprefix("chatcmpl-")

    tiers = request.children
    assert [t.name for t in tiers] == ["coe.tier", "coe.tier"]
    tier0, tier1 = tiers
    assert tier0.attributes["coe.tier.index"] == 0
    assert tier0.attributes["coe.tier.size"] == 3
    assert tier0.attributes["coe.tier.decision"] == "escalate"
    assert json.loads(tier0.attributes["coe.tier.votes"]) == {"positive": 1, "negative": 1}
    assert tier1.attributes["coe.tier.index"] == 1
    assert tier1.attributes["coe.tier.decision"] == "accept"
    assert tier1.attributes["coe.tier.agreement"] == 1.0

    calls = by_name(tier0.children)
    assert set(calls) == {"chat small-a", "chat small-b", "chat small-c"}
    assert [c.name for c in tier1.children] == ["chat large"]
    answered = calls["chat small-a"]
    assert answered.kind == "CLIENT"
    assert answered.status == "UNSET"
    assert answered.attributes["gen_ai.operation.name"] == "chat"
    assert answered.attributes["gen_ai.provider.name"] == "openai"
    assert answered.attributes["gen_ai.request.model"] == "small-a"
    assert answered.attributes["gen_ai.usage.input_tokens"] == 10
    assert answered.attributes["gen_ai.usage.output_tokens"] == 2
    assert answered.attributes["gen_ai.response.id"].startswith("cmpl-small-a-")
    assert answered.attributes["coe.call.status"] == "ok"
    assert "coe.call.cancelled" not in answered.attributes
    cancelled = calls["chat small-c"]
    assert cancelled.attributes["coe.call.cancelled"] is True
    assert cancelled.attributes["coe.call.status"] == "cancelled"
    assert cancelled.events == ["cancelled"]
    assert cancelled.end_ns >= cancelled.start_ns > 0

    # Each upstream got its call span's context as W3C traceparent: same trace, parent = call.
    for name in ("small-a", "small-b", "small-c", "large"):
        (headers,) = upstreams[name].request_headers
        version, seen_trace, parent, flags = headers["traceparent"].split("-")
        assert (version, seen_trace, flags) == ("00", trace_id, "01")
        assert parent == by_name(tier0.children + tier1.children)[f"chat {name}"].span_id


def test_a_failed_call_is_an_error_span_and_no_traceparent_starts_a_trace(
    traced_settings: Callable[..., Settings],
    upstreams: dict[str, UpstreamServer],
    receiver: OTLPReceiver,
) -> None:
    upstreams["small-a"].answer(None, status=500)

    # Every call of the tier finishes: the failure cannot arrive after the two votes that decide.
    with GatewayServer(traced_settings(threshold="2/3", wait_for_all=True)) as gateway:
        body = ask(gateway)

    assert body["coe"]["decision"] == "agreed"
    (request,) = tree(receiver.spans)
    assert request.parent_span_id == ""
    (tier,) = request.children
    assert tier.attributes["coe.tier.decision"] == "accept"
    failed = by_name(tier.children)["chat small-a"]
    assert failed.status == "ERROR"
    assert failed.attributes["error.type"] == "500"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["coe.call.status"] == "error"


def test_health_checks_and_scrapes_get_no_span(
    traced_settings: Callable[..., Settings], receiver: OTLPReceiver
) -> None:
    with GatewayServer(traced_settings()) as gateway:
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
        assert httpx.get(f"{gateway.base_url}/models").status_code == 200

    assert [span.name for span in receiver.spans] == ["GET /v1/models"]


def test_tracing_is_off_by_default_and_sends_no_traceparent(
    make_settings: Callable[..., Settings],
    upstreams: dict[str, UpstreamServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings()
    assert not any(m.cls is TraceMiddleware for m in create_app(settings).user_middleware)

    with GatewayServer(settings) as gateway:
        ask(gateway, {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"})

    assert all("traceparent" not in h for h in upstreams["small-a"].request_headers)


@pytest.mark.parametrize(
    ("environ", "endpoint", "wanted"),
    [
        ({}, None, False),
        ({}, "http://127.0.0.1:4318", True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, None, True),
        ({"OTEL_SDK_DISABLED": "true"}, "http://127.0.0.1:4318", False),
        (
            {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            None,
            False,
        ),
        ({"OTEL_TRACES_EXPORTER": "none"}, "http://127.0.0.1:4318", False),
        ({"OTEL_SDK_DISABLED": "false"}, "http://127.0.0.1:4318", True),
    ],
)
def test_when_tracing_is_wanted(
    environ: dict[str, str], endpoint: str | None, wanted: bool
) -> None:
    assert tracing_wanted(TelemetryConfig(otlp_endpoint=endpoint), environ) is wanted


def test_the_otel_variables_win_over_the_config(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "coe-from-env")
    config = TelemetryConfig(otlp_endpoint="http://127.0.0.1:9", service_name="coe-from-file")

    tracing = open_tracing(config, ())
    tracing.tracer.start_span("probe").end()
    assert tracing.flush()
    anyio.run(tracing.aclose)

    (span,) = receiver.spans
    assert span.name == "probe"
    assert span.resource["service.name"] == "coe-from-env"
    assert receiver.paths == ["/v1/traces"]


def test_the_otlp_endpoint_must_be_http() -> None:
    with pytest.raises(ValueError, match="http://"):
        TelemetryConfig(otlp_endpoint="127.0.0.1:4318")
