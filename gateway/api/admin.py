"""What operators change at run time: ``POST /v1/coe/reload`` re-reads the config file.

The same as SIGHUP to ``coe serve``, but it works across containers and answers with the result:
200 with the version now serving, or 409 with why the running config keeps serving (the file does
not load: the same file/key/problem lines as at start; or it changes what needs a restart). With
tenants or admin keys configured only an admin key may ask.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import JSONResponse

from gateway.api.state import app_state
from gateway.errors import Forbidden, ReloadRefused

router = APIRouter()


@router.post("/v1/coe/reload")
async def reload_config(request: Request) -> JSONResponse:
    state = app_state(request)
    keyring = state.keyring
    principal = keyring.authenticate(request.headers.get("authorization"))
    if (keyring.requires_key or keyring.has_admins) and not principal.is_admin:
        raise Forbidden("reloading the config needs an admin key")
    if state.reloader is None:
        raise ReloadRefused(
            "this gateway was not started from a config file (coe serve --config FILE); there "
            "is nothing to reload",
            code="reload_unavailable",
        )
    result = await state.reloader.reload()
    return JSONResponse(
        {
            "object": "coe.config_reload",
            "config_version": result.version,
            "previous_version": result.previous_version,
            "changed": result.changed,
            "draining_generations": state.config.draining,
        }
    )
