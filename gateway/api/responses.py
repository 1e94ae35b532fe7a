"""``POST /v1/responses``: OpenAI's Responses request in, the cascade's decision out.

The same cascade as chat completions (``cascade_call.serve_cascade``: auth, plan, budget, bill,
ledger, metrics); only the request's reading and the answer's shape differ. ``model`` is the
route; the answer is one ``message`` output item of one ``output_text`` part, and the ``coe``
object is an extension field of the response, as on a chat completion.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api.cascade_call import CascadeCall, serve_cascade
from gateway.api.chat_request import request_openapi
from gateway.api.protocol import decision_headers, response_events, response_object
from gateway.api.responses_request import ResponsesRequest, parse_responses_request
from gateway.plan import CoEOverrides

router = APIRouter()

_JSON = "application/json"


@router.post("/v1/responses", openapi_extra=request_openapi(ResponsesRequest))
async def create_response(request: Request) -> Response:
    body, outcome = await serve_cascade(request, _parse)
    structured = body.structured_output()
    text = structured.render(outcome.answer) if structured is not None else outcome.answer
    headers = decision_headers(outcome)
    echo = _echo(body)
    if body.stream:
        events = b"".join(
            b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            for event in response_events(outcome, text, echo)
        )
        return Response(events, media_type="text/event-stream", headers=headers)
    answer = response_object(outcome, text, echo, done=True)
    return Response(orjson.dumps(answer), media_type=_JSON, headers=headers)


def _parse(payload: Any) -> tuple[ResponsesRequest, CascadeCall]:
    body = parse_responses_request(payload)
    return body, CascadeCall(
        model=body.model,
        messages=body.chat_messages(),
        max_tokens=body.max_output_tokens,
        overrides=body.coe.overrides() if body.coe is not None else CoEOverrides(),
        structured=body.structured_output(),
    )


def _echo(body: ResponsesRequest) -> dict[str, Any]:
    """The request's fields a response repeats."""
    # The concrete format model is dumped, not the tagged union holding it.
    fmt = body.text.format if body.text is not None else None
    text: dict[str, Any] = {
        "format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
    }
    if body.text is not None and body.text.verbosity is not None:
        text["verbosity"] = body.text.verbosity
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "temperature": body.temperature,
        "top_p": body.top_p,
        "text": text,
        "user": body.user,
    }
