"""OpenTelemetry traces: one span per request, one per tier, one per upstream call.

Off by default. :func:`tracing_wanted` decides, once, in the app factory, from the standard
``OTEL_*`` environment and the config's ``[telemetry]`` table; when it says no, nothing here runs
per request (no middleware is installed and the engine gets ``tracing=None``). When it says yes,
the lifespan opens a :class:`Tracing` with :func:`open_tracing` — its own ``TracerProvider``
(never the global one, so several apps can run in one process), a ``BatchSpanProcessor`` and an
OTLP/HTTP (protobuf) exporter — and closes it (flushing) on shutdown. The SDK and exporter come
with the ``otel`` extra and are imported only then.

The tree, for one request::

    POST /v1/chat/completions   SERVER  (TraceMiddleware; parent: the client's ``traceparent``)
      coe.tier                  INTERNAL  one per tier run (CascadeEngine._run_tier)
        chat {model}            CLIENT    one per upstream call (CascadeEngine._call); its
                                          context goes upstream as ``traceparent``

The request span's ``coe.*`` attributes are read, when the answer has been sent, from the
request's ``RequestOutcome`` (billed by then): the engine binds it to the request's trace through
the OTel context (:meth:`Tracing.bind_outcome`). Spans are ended synchronously (``Span.end`` does
not await), so a cancelled call's span ends in its ``finally`` without a shield.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio.to_thread
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from gateway.config import TelemetryConfig
    from gateway.outcome import RequestOutcome
    from policies.cascade import Tally
    from providers.base import CallRecord
    from providers.endpoint import EndpointConfig

__all__ = [
    "TRACING_STATE_KEY",
    "TraceMiddleware",
    "Tracing",
    "open_tracing",
    "tracing_wanted",
]

log = logging.getLogger("coe.telemetry")

# The lifespan state key under which the app's Tracing is handed to TraceMiddleware.
TRACING_STATE_KEY = "coe.tracing"
INSTRUMENTATION_NAME = "coe.gateway"
# Paths that get no span: health checks and scrapes would drown the requests.
UNTRACED_PATHS = frozenset({"/healthz", "/metrics"})

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_OUTCOME_KEY = otel_context.create_key("coe.request-trace")
# gen_ai.provider.name for each endpoint kind: OTel's well-known names where there is one.
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic"}


def tracing_wanted(config: TelemetryConfig, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to trace: an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``[telemetry] otlp_endpoint``), and neither
    ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` says otherwise."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name) for name in _ENDPOINT_VARS) or bool(config.otlp_endpoint)


def open_tracing(
    config: TelemetryConfig,
    endpoints: tuple[EndpointConfig, ...],
    environ: Mapping[str, str] | None = None,
) -> Tracing:
    """A tracer provider exporting over OTLP/HTTP in batches, for one app. The ``OTEL_*``
    variables win over ``[telemetry]`` (an env endpoint over ``otlp_endpoint``,
    ``OTEL_SERVICE_NAME`` over ``service_name``); the SDK reads the others itself
    (``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``,
    ``OTEL_RESOURCE_ATTRIBUTES``)."""
    env = os.environ if environ is None else environ
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        from gateway.errors import ConfigError

        raise ConfigError(
            "tracing is configured (an OTLP endpoint is set) but the OpenTelemetry SDK is not "
            "installed: pip install 'coe-gateway[otel]'"
        ) from exc
    endpoint = None
    if not any(env.get(name) for name in _ENDPOINT_VARS) and config.otlp_endpoint:
        # As OTEL_EXPORTER_OTLP_ENDPOINT: the collector's root, to which the signal path is added.
        endpoint = config.otlp_endpoint.rstrip("/") + "/v1/traces"
    attributes: dict[str, Any] = {}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = config.service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("tracing on: OTLP/HTTP to %s", endpoint or "the OTEL_* endpoint")
    return Tracing(provider, endpoints)


@dataclass(slots=True)
class _RequestTrace:
    """What the request span learns after it started: the request's outcome."""

    outcome: RequestOutcome | None = None


@dataclass(frozen=True, slots=True)
class _CallShape:
    """An endpoint's span name and fixed attributes, worked out once."""

    name: str
    attributes: dict[str, Any]


class Tracing:
    """The app's tracer and what its spans say; made by :func:`open_tracing`."""

    def __init__(self, provider: TracerProvider, endpoints: tuple[EndpointConfig, ...]) -> None:
        self._provider = provider
        self.tracer: Tracer = provider.get_tracer(INSTRUMENTATION_NAME)
        self._calls = {e.name: _call_shape(e) for e in endpoints}

    def flush(self, timeout_ms: int = 30_000) -> bool:
        return self._provider.force_flush(timeout_ms)

    async def aclose(self) -> None:
        """Export what is queued and stop (blocking I/O: in a worker thread)."""
        await anyio.to_thread.run_sync(self._provider.shutdown)

    # The request span (TraceMiddleware).

    def start_request(self, scope: Scope) -> tuple[Span, object]:
        """The request's SERVER span, child of the client's ``traceparent`` if it sent one, made
        current; returns it and the token that :meth:`end_request` detaches."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        method = scope["method"]
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        current = trace.set_span_in_context(span, parent)
        current = otel_context.set_value(_OUTCOME_KEY, _RequestTrace(), current)
        return span, otel_context.attach(current)

    def end_request(
        self,
        span: Span,
        token: object,
        scope: Scope,
        status: int | None,
        error: BaseException | None,
    ) -> None:
        try:
            held = otel_context.get_value(_OUTCOME_KEY)
            if isinstance(held, _RequestTrace) and held.outcome is not None:
                span.set_attributes(_outcome_attributes(held.outcome))
            route = scope.get("route")
            path = getattr(route, "path", None)
            if isinstance(path, str):
                span.update_name(f"{scope['method']} {path}")
                span.set_attribute("http.route", path)
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
            span.end()

    # The engine's spans.

    def bind_outcome(self, outcome: RequestOutcome) -> None:
        """Hand ``outcome`` to the request span of the current context, if there is one."""
        held = otel_context.get_value(_OUTCOME_KEY)
        if isinstance(held, _RequestTrace):
            held.outcome = outcome

    def start_tier(self, index: int, size: int) -> Span:
        """A tier's span, child of the current context's span (the request's)."""
        return self.tracer.start_span(
            "coe.tier", attributes={"coe.tier.index": index, "coe.tier.size": size}
        )

    def end_tier(self, span: Span, tally: Tally, *, text_votes: bool, finished: bool) -> None:
        """``finished``: the tier was decided, not cut short by the route's deadline."""
        result = tally.result()
        decision = result.decision.action if finished else "deadline_exceeded"
        # Free-text answers are not put on spans: a text task's votes are their counts only.
        votes = sorted(result.votes.values(), reverse=True) if text_votes else result.votes
        span.set_attributes(
            {
                "coe.tier.decision": decision,
                "coe.tier.agreement": result.decision.agreement,
                "coe.tier.votes": json.dumps(votes),
                "coe.tier.voted": len(result.voted),
            }
        )
        span.end()

    def start_call(
        self, endpoint: str, tier_span: Span, max_tokens: int
    ) -> tuple[Span, dict[str, str]]:
        """An upstream call's CLIENT span, child of ``tier_span``, and the headers that carry its
        context upstream (``traceparent``, and ``tracestate``/``baggage`` when there are some)."""
        shape = self._calls.get(endpoint)
        if shape is None:
            shape = _CallShape(f"chat {endpoint}", {"coe.endpoint": endpoint})
        span = self.tracer.start_span(
            shape.name,
            context=trace.set_span_in_context(tier_span),
            kind=SpanKind.CLIENT,
            attributes={**shape.attributes, "gen_ai.request.max_tokens": max_tokens},
        )
        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return span, headers

    @staticmethod
    def end_call(span: Span, record: CallRecord | None) -> None:
        """End a call's span; ``record`` None: cancelled while the call was in flight."""
        if record is None or record.status == "cancelled":
            span.set_attributes({"coe.call.status": "cancelled", "coe.call.cancelled": True})
            span.add_event("cancelled", {"reason": "the tier was decided without this call"})
        else:
            attributes: dict[str, Any] = {
                "coe.call.status": record.status,
                "coe.call.attempts": record.attempts,
            }
            if record.tokens_in is not None:
                attributes["gen_ai.usage.input_tokens"] = record.tokens_in
            if record.tokens_out is not None:
                attributes["gen_ai.usage.output_tokens"] = record.tokens_out
            if record.upstream_request_id:
                attributes["gen_ai.response.id"] = record.upstream_request_id
            if record.http_status is not None:
                attributes["http.response.status_code"] = record.http_status
            if record.status != "ok":
                # The kind of failure only: an upstream's error body can quote the prompt.
                kind = str(record.http_status) if record.http_status is not None else record.status
                attributes["error.type"] = kind
                span.set_status(Status(StatusCode.ERROR, kind))
            span.set_attributes(attributes)
        span.end()


def _call_shape(endpoint: EndpointConfig) -> _CallShape:
    model = endpoint.model or endpoint.name
    provider = _PROVIDER_NAMES.get(endpoint.kind, endpoint.kind)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        # The attribute gen_ai.provider.name replaced (semantic conventions ≤ 1.36).
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "coe.endpoint": endpoint.name,
    }
    if endpoint.base_url:
        url = urlsplit(endpoint.base_url)
        if url.hostname:
            attributes["server.address"] = url.hostname
            port = url.port or (443 if url.scheme == "https" else 80)
            attributes["server.port"] = port
    return _CallShape(f"chat {model}", attributes)


def _outcome_attributes(outcome: RequestOutcome) -> dict[str, Any]:
    return {
        "coe.request_id": outcome.request_id,
        "coe.route": outcome.route,
        "coe.tenant": outcome.tenant,
        "coe.policy": outcome.policy,
        "coe.threshold": outcome.threshold,
        "coe.status": outcome.status,
        "coe.decision": outcome.decision,
        "coe.exit_tier": outcome.tier,
        "coe.agreement": outcome.agreement,
        "coe.calls": len(outcome.calls),
        "coe.cost_usd": outcome.cost_usd,
        "coe.counterfactual_usd": outcome.counterfactual_usd,
        "coe.latency_ms": outcome.latency_ms,
    }


class TraceMiddleware:
    """The request span around every HTTP exchange but health checks and scrapes. Installed only
    when tracing is wanted; the lifespan's :class:`Tracing` is read from the request's state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = scope.get("state", {}).get(TRACING_STATE_KEY) if scope["type"] == "http" else None
        if not isinstance(tracing, Tracing) or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        span, token = tracing.start_request(scope)
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_noting_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.end_request(span, token, scope, status, error)
