"""The one path every cascade route takes: auth, plan, budget, engine, bill, ledger, metrics and
the failure mapping. ``chat`` and ``responses`` differ only in how they read the request and write
the answer, so billing and budgets cannot drift between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from gateway.api.state import app_state
from gateway.errors import BadRequest, DeadlineExceeded, NotFound, UpstreamFailed
from gateway.plan import CoEOverrides, OutputFormat, make_plan

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from starlette.requests import Request

    from gateway.api.structured import StructuredOutput
    from gateway.outcome import RequestOutcome

_Parsed = TypeVar("_Parsed")


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
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    parsed, call = parse(payload)
    route = state.settings.routes.get(call.model)
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
    plan = make_plan(call.model, route, call.overrides, request.headers, output)
    await state.budgets.check(principal.tenant)
    outcome = await state.engine.run(
        plan,
        call.messages,
        request_id=request.state.request_id,
        tenant=principal.tenant,
        max_tokens=call.max_tokens,
    )
    state.biller.bill(outcome, route)
    await state.ledger.record(outcome)
    state.metrics.observe(outcome)
    _raise_for_failure(outcome)
    return parsed, outcome


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
