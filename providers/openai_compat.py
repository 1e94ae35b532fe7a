"""Any OpenAI-compatible chat completions server, and the base of the vLLM and llama.cpp adapters.

Subclasses change only the request body, through ``_body``. Everything else (auth, concurrency,
timeout, retries, parsing) is shared.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, TypeGuard

import httpx
import orjson

from providers._constants import ERROR_BODY_CHARS
from providers.base import CallRecord, CallRequest, Provider, TokenLogprob
from providers.outcomes import failed_call, unanswered_call
from providers.posting import EndpointPoster, api_key
from providers.prompting import build_messages
from providers.retry import DEFAULT_RETRY_POLICY, Outcome, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from providers.endpoint import EndpointConfig

logger = logging.getLogger(__name__)


class OpenAIProvider(Provider):
    def __init__(
        self,
        endpoint: EndpointConfig,
        client: httpx.AsyncClient,
        *,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.name = endpoint.name
        self._endpoint = endpoint
        self._client = client
        url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._poster = EndpointPoster(endpoint, client, url, retry_policy)
        self._headers = {"content-type": "application/json"}
        if (key := api_key(endpoint)) is not None:
            self._headers["authorization"] = f"Bearer {key}"

    def _body(self, request: CallRequest) -> dict[str, Any]:
        """The JSON body for ``request``, before the endpoint's ``extra_body`` is merged over it."""
        body: dict[str, Any] = {
            "model": self._endpoint.model,
            "messages": build_messages(self._endpoint, request.messages),
            "max_tokens": request.max_tokens,
            # The endpoint's own sampling wins over the route's: a tier can be N samples of one
            # model (distinct seeds, a temperature above 0).
            "temperature": (
                self._endpoint.temperature
                if self._endpoint.temperature is not None
                else request.temperature
            ),
        }
        if self._endpoint.top_p is not None:
            body["top_p"] = self._endpoint.top_p
        if self._endpoint.seed is not None:
            body["seed"] = self._endpoint.seed
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        if request.response_format is not None and self._endpoint.kind == "openai":
            # Hosted models answer in the client's schema; vLLM and llama.cpp (subclasses, other
            # kinds) are constrained to the answer set instead, which their servers would refuse
            # alongside a response_format.
            body["response_format"] = dict(request.response_format)
        return body

    def _upstream_request_id(self, request_id: str) -> str:
        """The id sent upstream as ``x-request-id``; dialects with rules of their own override."""
        return request_id

    async def complete(self, request: CallRequest) -> CallRecord:
        started = time.perf_counter()
        body = self._body(request)
        body.update(self._endpoint.extra_body)
        try:
            content = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            error = f"request is not JSON-serialisable: {exc}"
            return failed_call(self.name, "error", error, 0, started)
        headers = self._headers
        if request.request_id:
            headers = {**headers, "x-request-id": self._upstream_request_id(request.request_id)}
        if request.headers:
            headers = {**headers, **request.headers}
        outcome, attempts = await self._poster.post(content, headers)
        if outcome is None:
            error = f"no answer within {self._endpoint.timeout_s:g} s"
            return failed_call(self.name, "timeout", error, attempts, started)
        return self._record(outcome, attempts, started)

    def _record(self, outcome: Outcome, attempts: int, started: float) -> CallRecord:
        failed = unanswered_call(
            self.name, outcome, attempts, started,
            error_detail=lambda response: response.text[:ERROR_BODY_CHARS],
        )  # fmt: skip
        if failed is not None:
            return failed
        assert isinstance(outcome, httpx.Response)
        try:
            text, usage, logprobs, upstream_id = _parse(orjson.loads(outcome.content))
        except orjson.JSONDecodeError:
            error = "malformed response: not JSON"
            return failed_call(self.name, "error", error, attempts, started)
        except _MalformedResponse as exc:
            return failed_call(self.name, "error", f"malformed response: {exc}", attempts, started)
        return CallRecord(
            endpoint=self.name,
            status="ok",
            text=text,
            tokens_in=_count(usage, "prompt_tokens"),
            tokens_out=_count(usage, "completion_tokens"),
            logprobs=logprobs,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempts,
            upstream_request_id=upstream_id,
        )


class _MalformedResponse(Exception):
    """A 2xx response without the chat completion it should carry."""


def _parse(
    payload: Any,
) -> tuple[str, Mapping[str, Any], tuple[TokenLogprob, ...] | None, str | None]:
    if not isinstance(payload, dict):
        raise _MalformedResponse("not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list):
        raise _MalformedResponse("no choices")
    if not choices or not isinstance(choices[0], dict):
        raise _MalformedResponse("empty choices")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str):
        raise _MalformedResponse("choices[0].message.content is missing or not a string")
    usage = payload.get("usage")
    upstream_id = payload.get("id")
    return (
        text,
        usage if isinstance(usage, dict) else {},
        _logprobs(choice.get("logprobs")),
        upstream_id if isinstance(upstream_id, str) else None,
    )


def _count(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _logprobs(block: Any) -> tuple[TokenLogprob, ...] | None:
    """OpenAI's ``logprobs.content`` list; None when absent or not in that shape, since the
    answer stands without them."""
    content = block.get("content") if isinstance(block, dict) else None
    if not isinstance(content, list):
        return None
    parsed = []
    for item in content:
        entry = _token_logprob(item)
        if entry is None:
            logger.debug("ignoring logprobs with an unreadable entry: %r", item)
            return None
        parsed.append(entry)
    return tuple(parsed)


def _token_logprob(item: Any) -> TokenLogprob | None:
    if not isinstance(item, dict):
        return None
    token, logprob = item.get("token"), item.get("logprob")
    if not isinstance(token, str) or not _is_number(logprob):
        return None
    top: list[tuple[str, float]] = []
    for alternative in item.get("top_logprobs") or ():
        if not isinstance(alternative, dict):
            return None
        alt_token, alt_logprob = alternative.get("token"), alternative.get("logprob")
        if not isinstance(alt_token, str) or not _is_number(alt_logprob):
            return None
        top.append((alt_token, float(alt_logprob)))
    return TokenLogprob(token=token, logprob=float(logprob), top=tuple(top))


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
