"""``GET /v1/models``: the routes, as OpenAI lists models."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api.state import app_state

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    state = app_state(request)
    state.keyring.authenticate(request.headers.get("authorization"))
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "coe-gateway"}
        for name in state.settings.routes
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
