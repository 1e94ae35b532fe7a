"""The one path every cascade route takes: auth, plan, budget, engine, bill, ledger, metrics and
the failure mapping. ``chat`` and ``responses`` differ only in how they read the request and write
the answer, so billing and budgets cannot drift between them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from gateway.api.state import app_state
from gateway.errors import (
    BadRequest,
    DeadlineExceeded,
    LedgerUnavailable,
    NotFound,
    TooManyRequests,
    UpstreamFailed,
)
from gateway.plan import CoEOverrides, OutputFormat, make_plan
from providers.prompting import prompt_chars

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from starlette.requests import Request

    from gateway.api.state import AppState
    from gateway.api.structured import StructuredOutput
    from gateway.ledger import Reservation
    from gateway.outcome import RequestOutcome
    from gateway.reload import Generation
    from gateway.tenants import Principal

_Parsed = TypeVar("_Parsed")

log = logging.getLogger("coe.request")


@dataclass(frozen=True, slots=True)
class CascadeCall:
    """What one request asks of the cascade, whichever API it came in."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    max_tokens: int | None = None
    overrides: CoEOverrides = field(default_factory=CoEOverrides)
    structured: StructuredOutput | None = None


async def serve_cascade(
    request: Request, parse: Callable[[Any], tuple[_Parsed, CascadeCall]]
) -> tuple[_Parsed, RequestOutcome]:
    """Run the cascade for ``request``, whose JSON body ``parse`` reads (after auth); returns the
    parsed request and an ``ok`` outcome, already billed and recorded. Raises the 4xx of a bad
    request or budget, and the 502/504 of a cascade that reached no answer (also recorded)."""
    state = app_state(request)
    # The config generation is taken once: a reload meanwhile leaves this request on its own.
    with state.config.use() as config:
        principal = config.keyring.authenticate(request.headers.get("authorization"))
        # Keyed tenants only: without [[tenants]] everyone is one anonymous tenant.
        limit = config.settings.server.max_concurrent_requests_per_tenant
        rate = config.settings.server.max_requests_per_second_per_tenant
        if not config.keyring.requires_key:
            limit, rate = 0, 0.0
        try:
            # A late event loop (gateway.contention): each tenant gets a fair share of requests.
            contended = state.loop_lag.contended()
            with state.tenant_limits.hold(principal.tenant, limit, contended=contended):
                # After the concurrency check, so a request refused there takes no token.
                state.tenant_limits.admit(principal.tenant, rate)
                return await _serve(request, parse, state, config, principal)
        except TooManyRequests:
            state.metrics.rate_limited.labels(principal.tenant).inc()
            raise


async def _serve(
    request: Request,
    parse: Callable[[Any], tuple[_Parsed, CascadeCall]],
    state: AppState,
    config: Generation,
    principal: Principal,
) -> tuple[_Parsed, RequestOutcome]:
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    parsed, call = parse(payload)
    route = config.settings.routes.get(call.model)
    if route is None:
        raise NotFound(f"the model {call.model!r} is not a route of this gateway", param="model")
    output = (
        OutputFormat(
            labels=call.structured.labels,
            param=call.structured.param,
            field=call.structured.field,
            response_format=call.structured.upstream,
        )
        if call.structured is not None
        else None
    )
    plan = make_plan(
        call.model, route, call.overrides, request.headers, output,
        threshold_in_force=state.thresholds.get(call.model, route),
    )
    # A ledger known to be out refuses (503) before any upstream call is paid for.
    state.ledger.ensure_available()
    reservation = await config.budgets.reserve(
        principal.tenant,
        config.biller.worst_case(
            plan.tiers, prompt_chars(call.messages), call.max_tokens or route.max_tokens,
            route.deadline_s,
        ),
        request_id=request.state.request_id,
        deadline_s=route.deadline_s,
    )
    try:
        outcome = await config.engine.run(
            plan,
            call.messages,
            request_id=request.state.request_id,
            tenant=principal.tenant,
            max_tokens=call.max_tokens,
        )
    except BaseException:
        if reservation is not None:
            await _release(state, reservation)
        raise
    outcome.config_version = config.version
    outcome.threshold_in_force = plan.threshold_in_force
    config.biller.bill(outcome, route)
    # Settles the reservation in the rows' transaction; a 503 if the ledger cannot commit.
    await state.ledger.record(outcome, reservation=reservation)
    state.metrics.observe(outcome)
    log.info(
        "request",
        extra={
            "route": outcome.route,
            "tenant": outcome.tenant,
            "status": outcome.status,
            "tier": outcome.tier,
            "latency_ms": round(outcome.latency_ms, 1),
            "config_version": config.version,
        },
    )
    if state.auditor is not None:
        # After the outcome is recorded; never awaits, so the response does not wait for it.
        state.auditor.after_serving(plan, outcome, call.messages, call.max_tokens)
    _raise_for_failure(outcome)
    return parsed, outcome


async def _release(state: AppState, reservation: Reservation) -> None:
    """Give back the reservation of a request that ended without an outcome to bill; if the
    ledger cannot, the reservation expires."""
    with anyio.CancelScope(shield=True):
        try:
            await state.ledger.release(reservation)
        except LedgerUnavailable:
            log.warning("reservation of request %s left to expire", reservation.request_id)


def _raise_for_failure(outcome: RequestOutcome) -> None:
    """A 502 or 504 carrying the outcome, whose decision headers the app's handler adds."""
    if outcome.status == "ok":
        return
    failures = "; ".join(
        f"{c.endpoint}: {c.status}" + (f" ({c.error})" if c.error else "")
        for c in outcome.calls
        if c.tier == outcome.tier
    )
    if outcome.status == "deadline_exceeded":
        raise DeadlineExceeded(
            f"route {outcome.route!r} reached no decision within its deadline "
            f"(tier {outcome.tier}: {failures})",
            outcome=outcome,
        )
    raise UpstreamFailed(
        f"every endpoint of tier {outcome.tier} of route {outcome.route!r} failed: {failures}",
        outcome=outcome,
    )
