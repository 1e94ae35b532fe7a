"""A route FastAPI documents but Starlette serves: for the hot path.

FastAPI's own route handler solves dependencies, opens two exit stacks and checks body limits on
every request, to call an endpoint that takes the raw ``Request`` and returns a ``Response``
anyway: the cascade routes read and validate their body themselves (OpenAI's error shapes). A
``PlainRoute`` keeps everything FastAPI knows about the route (path, methods, ``openapi_extra``,
so the OpenAPI document is unchanged) and hands the request straight to the endpoint, as a
Starlette ``Route`` does; the app's exception handlers still map its errors
(bench/RESULTS.md has the figures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from starlette.routing import request_response

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from starlette.requests import Request
    from starlette.responses import Response


class PlainRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is ``async (request: Request) -> Response``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = request_response(endpoint)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler
