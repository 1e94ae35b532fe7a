"""``GET /v1/coe/costs``: the caller's cost report; an admin key may name a tenant or see all."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads annotations at runtime
from starlette.responses import Response

from gateway.api.state import app_state
from gateway.errors import BadRequest, Forbidden
from gateway.ledger import GROUP_BYS
from gateway.reports import cost_report, parse_time

if TYPE_CHECKING:
    from gateway.tenants import Principal

router = APIRouter()

_PARAMS = ("tenant", "since", "until", "group_by")


# The report routes read their query themselves (to refuse repeated parameters); the document
# still names them. A report's window, here and in GET /v1/coe/audit:
WINDOW_OPENAPI = [
    {"name": "since", "in": "query", "required": False,
     "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "required": False,
     "schema": {"type": "string", "format": "date-time"}},
]
_QUERY_OPENAPI = {
    "parameters": [
        *WINDOW_OPENAPI,
        {"name": "group_by", "in": "query", "required": False,
         "schema": {"type": "string", "enum": list(GROUP_BYS)}},
        {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "admin keys only: the tenant to report on"},
    ]
}


@router.get("/v1/coe/costs", openapi_extra=_QUERY_OPENAPI)
async def costs(request: Request) -> Response:
    state = app_state(request)
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    params = single_values(request, _PARAMS)
    report = await cost_report(
        state.ledger,
        tenant=report_tenant(principal, params.get("tenant")),
        since=parse_time(params.get("since"), "since"),
        until=parse_time(params.get("until"), "until"),
        group_by=params.get("group_by") or "route",
    )
    return Response(orjson.dumps(report), media_type="application/json")


def report_tenant(principal: Principal, asked: str | None) -> str | None:
    """Whose numbers the caller sees: its own, or for an admin the named tenant or all (None)."""
    if principal.is_admin:
        return asked or None
    if asked and asked != principal.tenant:
        raise Forbidden("this key may only read its own tenant's costs", param="tenant")
    return principal.tenant


def single_values(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The query's parameters ``names``, each given at most once."""
    # A repeated parameter is refused rather than resolved: ?tenant=mine&tenant=theirs must not
    # pass the check on one value and be used with the other.
    values: dict[str, str] = {}
    for name in names:
        given = request.query_params.getlist(name)
        if len(given) > 1:
            raise BadRequest(f"the query parameter {name!r} is given more than once", param=name)
        if given:
            values[name] = given[0]
    return values
