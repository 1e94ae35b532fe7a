"""``POST /v1/chat/completions``: OpenAI's chat request in, the cascade's decision out."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api.cascade_call import CascadeCall, serve_cascade
from gateway.api.chat_request import (
    ChatCompletionRequest,
    chat_request_openapi,
    parse_chat_request,
)
from gateway.api.plain_route import PlainRoute
from gateway.api.protocol import completion_body, completion_chunks, decision_headers
from gateway.plan import CoEOverrides

# The hot path: documented by FastAPI, served without its request handler (plain_route).
router = APIRouter(route_class=PlainRoute)

_JSON = "application/json"


@router.post("/v1/chat/completions", openapi_extra=chat_request_openapi())
async def chat_completions(request: Request) -> Response:
    chat, outcome = await serve_cascade(request, _parse)
    structured = chat.structured_output()
    content = structured.render(outcome.answer) if structured is not None else outcome.answer
    headers = decision_headers(outcome)
    if chat.stream:
        chunks = completion_chunks(outcome, content)
        events = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
        events += b"data: [DONE]\n\n"
        return Response(events, media_type="text/event-stream", headers=headers)
    body = completion_body(outcome, content)
    return Response(orjson.dumps(body), media_type=_JSON, headers=headers)


def _parse(payload: Any) -> tuple[ChatCompletionRequest, CascadeCall]:
    chat = parse_chat_request(payload)
    return chat, CascadeCall(
        model=chat.model,
        # The client's own messages, as sent: upstreams get them unchanged.
        messages=payload["messages"],
        max_tokens=chat.answer_tokens,
        overrides=chat.coe.overrides() if chat.coe is not None else CoEOverrides(),
        structured=chat.structured_output(),
    )
