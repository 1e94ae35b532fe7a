"""``POST /v1/chat/completions``: OpenAI's chat request in, the cascade's decision out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api.chat_request import chat_request_openapi, parse_chat_request
from gateway.api.protocol import completion_body, completion_chunks, decision_headers
from gateway.api.state import app_state
from gateway.errors import BadRequest, DeadlineExceeded, NotFound, UpstreamFailed
from gateway.plan import CoEOverrides, make_plan

if TYPE_CHECKING:
    from gateway.outcome import RequestOutcome

router = APIRouter()

_JSON = "application/json"


@router.post("/v1/chat/completions", openapi_extra=chat_request_openapi())
async def chat_completions(request: Request) -> Response:
    state = app_state(request)
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    chat = parse_chat_request(payload)
    route = state.settings.routes.get(chat.model)
    if route is None:
        raise NotFound(f"the model {chat.model!r} is not a route of this gateway", param="model")
    overrides = chat.coe.overrides() if chat.coe is not None else CoEOverrides()
    plan = make_plan(chat.model, route, overrides, request.headers)
    await state.budgets.check(principal.tenant)
    outcome = await state.engine.run(
        plan,
        payload["messages"],
        request_id=request.state.request_id,
        tenant=principal.tenant,
        max_tokens=chat.answer_tokens,
    )
    state.biller.bill(outcome, route)
    await state.ledger.record(outcome)
    state.metrics.observe(outcome)
    _raise_for_failure(outcome)
    headers = decision_headers(outcome)
    if chat.stream:
        events = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in completion_chunks(outcome))
        events += b"data: [DONE]\n\n"
        return Response(events, media_type="text/event-stream", headers=headers)
    return Response(orjson.dumps(completion_body(outcome)), media_type=_JSON, headers=headers)


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
