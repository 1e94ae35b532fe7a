"""A Python function as an ensemble member (``kind = "python"``, ``function = "module:function"``).

The function takes the last user message's text and returns the answer as a string. It runs in a
worker thread, so a slow or CPU-bound classifier does not stall the event loop; it reports no
tokens (billing estimates).
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from providers.base import CallRecord, CallRequest, CallStatus, Provider
from providers.errors import EndpointConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from providers.endpoint import EndpointConfig

logger = logging.getLogger(__name__)


class PythonProvider(Provider):
    def __init__(self, endpoint: EndpointConfig) -> None:
        self.name = endpoint.name
        self._timeout_s = endpoint.timeout_s
        self._function = load_function(endpoint.name, endpoint.function or "")
        self._limiter = anyio.CapacityLimiter(endpoint.max_concurrency)

    async def complete(self, request: CallRequest) -> CallRecord:
        started = time.perf_counter()
        text = last_user_text(request.messages)
        if text is None:
            return self._record(started, "error", error="no user message with text")
        answer: object = None
        with anyio.move_on_after(self._timeout_s):
            try:
                # The thread cannot be stopped; on cancellation the call returns at once and the
                # thread's late result is dropped.
                answer = await anyio.to_thread.run_sync(
                    self._function, text, limiter=self._limiter, abandon_on_cancel=True
                )
            except Exception as exc:  # any failure of user code is a vote for nothing
                return self._record(started, "error", error=f"{type(exc).__name__}: {exc}")
            if not isinstance(answer, str):
                return self._record(
                    started, "error", error=f"function returned {type(answer).__name__}, not str"
                )
            return self._record(started, "ok", text=answer)
        return self._record(started, "timeout", error=f"no answer within {self._timeout_s:g} s")

    def _record(
        self,
        started: float,
        status: CallStatus,
        *,
        text: str | None = None,
        error: str | None = None,
    ) -> CallRecord:
        if error is not None:
            logger.debug("endpoint %s: %s: %s", self.name, status, error)
        return CallRecord(
            endpoint=self.name,
            status=status,
            text=text,
            error=error,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def load_function(endpoint: str, reference: str) -> Callable[[str], object]:
    """Import ``module:attribute`` (the attribute may be dotted); EndpointConfigError if not."""
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:  # an import can fail in any way its module's code can
        raise EndpointConfigError(
            f"endpoint {endpoint!r}: function {reference!r} cannot be imported: {exc}"
        ) from exc
    if not callable(target):
        raise EndpointConfigError(f"endpoint {endpoint!r}: function {reference!r} is not callable")
    function: Callable[[str], object] = target
    return function


def last_user_text(messages: tuple[Mapping[str, Any], ...]) -> str | None:
    """The text of the last user message: its string content, or its text parts joined."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            parts = [
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            ]
            return "\n".join(parts) if parts else None
        return None
    return None
