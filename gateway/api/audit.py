"""``GET /v1/coe/audit``: one route's live-audit report (docs/api.md, "Audit"); a key reads its
own tenant's traffic, an admin key any tenant's or all."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads annotations at runtime
from starlette.responses import Response

from gateway.api.costs import WINDOW_OPENAPI, report_tenant, single_values
from gateway.api.state import app_state
from gateway.audit import route_audit_report
from gateway.errors import BadRequest
from gateway.reports import parse_time

router = APIRouter()

_PARAMS = ("route", "tenant", "since", "until")

_QUERY_OPENAPI = {
    "parameters": [
        {"name": "route", "in": "query", "required": True, "schema": {"type": "string"}},
        *WINDOW_OPENAPI,
        {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "admin keys only: the tenant whose traffic to report on"},
    ]
}


@router.get("/v1/coe/audit", openapi_extra=_QUERY_OPENAPI)
async def audit(request: Request) -> Response:
    state = app_state(request)
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    params = single_values(request, _PARAMS)
    route = params.get("route")
    if not route:
        raise BadRequest("name the route to report on: ?route=NAME", param="route")
    report = await route_audit_report(
        state.ledger,
        route,
        tenant=report_tenant(principal, params.get("tenant")),
        since=parse_time(params.get("since"), "since"),
        until=parse_time(params.get("until"), "until"),
    )
    return Response(orjson.dumps(report), media_type="application/json")
