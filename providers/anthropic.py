"""Anthropic's Messages API: ``kind = "anthropic"``.

``base_url`` is the API's ``/v1`` root, as for the OpenAI-compatible kinds
(``https://api.anthropic.com/v1``); calls go to ``POST {base_url}/messages`` with the key of
``api_key_env`` in ``x-api-key`` and ``anthropic-version: 2023-06-01``. References:
https://platform.claude.com/docs/en/api/messages (request and response) and
https://platform.claude.com/docs/en/api/errors (error shape, 529 ``overloaded_error``).

The body: ``model``, ``max_tokens`` (required by Anthropic), ``temperature`` (and the endpoint's
``top_p``; Anthropic has no ``seed``), ``system`` — the endpoint's ``system_prompt`` and the
client's system and developer messages, in that order — and ``messages``, the user and assistant
turns, consecutive turns of one role merged into one (as the API itself would). Text and image
parts are translated; other parts (audio, files) and tool turns fail the call before it is sent.
``extra_body`` is merged over the body, as for the other kinds.

The answer is the response's text blocks joined. Anthropic's ``usage.input_tokens`` counts only
the prompt tokens after the last cache breakpoint, so the record's ``tokens_in`` adds the cache's
``cache_creation_input_tokens`` and ``cache_read_input_tokens``, which it also keeps apart for
billing (``policies.pricing``: writes 1.25× the input rate, 2× for the 1-hour cache; reads 0.1×).

Auth, concurrency, the whole-call timeout and the retry rules (``providers.retry``) are those of
the OpenAI-compatible adapter. Anthropic's 529 ``overloaded_error`` is retried as a 503 is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from providers._constants import ERROR_BODY_CHARS
from providers.base import CallRecord, CallRequest, Provider
from providers.outcomes import failed_call, unanswered_call
from providers.posting import EndpointPoster, api_key
from providers.prompting import build_messages
from providers.retry import DEFAULT_RETRY_POLICY, Outcome, RetryPolicy

if TYPE_CHECKING:
    from providers.endpoint import EndpointConfig

logger = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    def __init__(
        self,
        endpoint: EndpointConfig,
        client: httpx.AsyncClient,
        *,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.name = endpoint.name
        self._endpoint = endpoint
        url = endpoint.base_url.rstrip("/") + "/messages"
        self._poster = EndpointPoster(endpoint, client, url, retry_policy)
        self._headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if (key := api_key(endpoint)) is not None:
            self._headers["x-api-key"] = key

    def _body(self, request: CallRequest) -> dict[str, Any]:
        """The JSON body for ``request``, before ``extra_body`` is merged over it."""
        system, turns = to_messages(build_messages(self._endpoint, request.messages))
        endpoint = self._endpoint
        body: dict[str, Any] = {
            "model": endpoint.model,
            "max_tokens": request.max_tokens,
            "messages": turns,
            "temperature": (
                endpoint.temperature if endpoint.temperature is not None else request.temperature
            ),
        }
        if system:
            body["system"] = system
        if endpoint.top_p is not None:
            body["top_p"] = endpoint.top_p
        return body

    async def complete(self, request: CallRequest) -> CallRecord:
        started = time.perf_counter()
        try:
            body = self._body(request)
        except UnsupportedMessage as exc:
            return failed_call(self.name, "error", str(exc), 0, started)
        body.update(self._endpoint.extra_body)
        try:
            content = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            error = f"request is not JSON-serialisable: {exc}"
            return failed_call(self.name, "error", error, 0, started)
        headers = self._headers
        if request.request_id:
            headers = {**headers, "x-request-id": request.request_id}
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
            error_detail=error_detail, request_id_header="request-id",
        )  # fmt: skip
        if failed is not None:
            return failed
        assert isinstance(outcome, httpx.Response)
        try:
            message = parse_message(orjson.loads(outcome.content))
        except orjson.JSONDecodeError:
            error = "malformed response: not JSON"
            return failed_call(self.name, "error", error, attempts, started)
        except MalformedMessage as exc:
            return failed_call(self.name, "error", f"malformed response: {exc}", attempts, started)
        if message.stop_reason not in (None, "end_turn", "stop_sequence"):
            logger.debug("endpoint %s: stop_reason %s", self.name, message.stop_reason)
        usage = message.usage
        return CallRecord(
            endpoint=self.name,
            status="ok",
            text=message.text,
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.output_tokens,
            cache_read_tokens=usage.cache_read,
            cache_write_tokens=usage.cache_write,
            cache_write_1h_tokens=usage.cache_write_1h,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempts,
            upstream_request_id=message.message_id,
        )


class UnsupportedMessage(Exception):
    """A client message the Messages API adapter cannot translate."""


class MalformedMessage(Exception):
    """A 2xx response without the message it should carry."""


# -- request: OpenAI chat messages → Anthropic's system and messages --


def to_messages(
    messages: list[dict[str, Any]],
) -> tuple[str, list[dict[str, Any]]]:
    """The ``system`` text and the ``messages`` turns for OpenAI-style ``messages``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_texts(content, role))
            continue
        if role not in ("user", "assistant"):
            raise UnsupportedMessage(f"kind 'anthropic' does not translate {role!r} messages")
        if content is None:
            if message.get("tool_calls") or message.get("function_call"):
                raise UnsupportedMessage("kind 'anthropic' does not translate tool calls")
            continue
        blocks = _blocks(content, role)
        if turns and turns[-1]["role"] == role:
            # One turn per role change; the API would merge consecutive turns the same way.
            turns[-1]["content"] = _as_blocks(turns[-1]["content"]) + _as_blocks(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(part for part in system if part), turns


def _texts(content: Any, role: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise UnsupportedMessage(f"{role} messages may hold text parts only")
            texts.append(str(part.get("text", "")))
        return texts
    return []


def _blocks(content: Any, role: str) -> str | list[dict[str, Any]]:
    """A string stays a string; a list of parts becomes a list of content blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnsupportedMessage(f"{role} message content must be a string or a list of parts")
    return [_block(part) for part in content]


def _block(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else None
        if isinstance(url, str):
            return {"type": "image", "source": _image_source(url)}
    raise UnsupportedMessage(f"kind 'anthropic' does not translate {kind!r} content parts")


def _image_source(url: str) -> dict[str, Any]:
    # OpenAI carries inline images as data URLs; Anthropic as base64 with their media type.
    if url.startswith("data:") and ";base64," in url:
        header, data = url[len("data:"):].split(";base64,", 1)
        return {"type": "base64", "media_type": header, "data": data}
    return {"type": "url", "url": url}


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


# -- response --


@dataclass(frozen=True, slots=True)
class Usage:
    """A message's ``usage``; None where the response did not say."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_write: int | None = None
    cache_read: int | None = None
    # The part of ``cache_write`` kept for an hour (``cache_creation.ephemeral_1h_input_tokens``).
    cache_write_1h: int | None = None

    @classmethod
    def read(cls, usage: Any) -> Usage:
        if not isinstance(usage, Mapping):
            return cls()
        split = usage.get("cache_creation")
        return cls(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_write=_count(usage, "cache_creation_input_tokens"),
            cache_read=_count(usage, "cache_read_input_tokens"),
            cache_write_1h=(
                _count(split, "ephemeral_1h_input_tokens") if isinstance(split, Mapping) else None
            ),
        )

    @property
    def prompt_tokens(self) -> int | None:
        """Every prompt token: uncached, written to the cache and read from it."""
        if self.input_tokens is None:
            return None
        return self.input_tokens + (self.cache_write or 0) + (self.cache_read or 0)


@dataclass(frozen=True, slots=True)
class Message:
    text: str
    usage: Usage
    stop_reason: str | None
    message_id: str | None


def parse_message(payload: Any) -> Message:
    """The text, usage, stop reason and id of a Messages API response."""
    if not isinstance(payload, dict):
        raise MalformedMessage("not a JSON object")
    content = payload.get("content")
    if not isinstance(content, list):
        raise MalformedMessage("no content")
    stop_reason = payload.get("stop_reason")
    stop_reason = stop_reason if isinstance(stop_reason, str) else None
    texts = [
        block["text"]
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    if not texts:
        raise MalformedMessage(f"no text content (stop_reason {stop_reason})")
    upstream_id = payload.get("id")
    return Message(
        text="".join(texts),
        usage=Usage.read(payload.get("usage")),
        stop_reason=stop_reason,
        message_id=upstream_id if isinstance(upstream_id, str) else None,
    )


def error_detail(response: httpx.Response) -> str:
    """``type: message`` from Anthropic's error shape (``{"type": "error", "error": {"type",
    "message"}}``), else the start of the body."""
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        detail = f"{error['type']}: {error.get('message', '')}"
    else:
        detail = response.text
    return detail[:ERROR_BODY_CHARS]


def _count(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
