"""What an HTTP adapter records when a call brought no answer: one place for the rules the
OpenAI-compatible and Anthropic adapters share.

A transport error is a ``timeout`` (httpx's timeouts) or an ``error``; an HTTP error status is an
``error`` whose message keeps the upstream's body for the client's error message, except on
401/403, whose body can quote the operator's key. The debug log never carries a body: upstreams
often fill it with the request's own input. ``http_status`` lets the circuit breaker tell an
endpoint's trouble from a request's.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import httpx

from providers.base import CallRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    from providers.base import CallStatus
    from providers.retry import Outcome

logger = logging.getLogger(__name__)

_WITHHELD_BODY_STATUSES = (401, 403)


def failed_call(
    endpoint: str, status: CallStatus, error: str, attempts: int, started: float
) -> CallRecord:
    """A call that brought no answer, timed from ``started`` (``time.perf_counter()``)."""
    logger.debug("endpoint %s: %s after %d attempt(s): %s", endpoint, status, attempts, error)
    return CallRecord(
        endpoint=endpoint,
        status=status,
        error=error,
        latency_ms=(time.perf_counter() - started) * 1000,
        attempts=attempts,
    )


def unanswered_call(
    endpoint: str,
    outcome: Outcome,
    attempts: int,
    started: float,
    *,
    error_detail: Callable[[httpx.Response], str],
    request_id_header: str | None = None,
) -> CallRecord | None:
    """The record of a transport error or an HTTP error status; None for a 2xx, which the
    adapter reads itself. ``error_detail`` renders an error body in the upstream's dialect."""
    if isinstance(outcome, httpx.RequestError):
        timed_out = isinstance(outcome, httpx.TimeoutException)
        name, detail = type(outcome).__name__, str(outcome)
        error = f"{name}: {detail}" if detail else name
        return failed_call(endpoint, "timeout" if timed_out else "error", error, attempts, started)
    if outcome.is_success:
        return None
    record = failed_call(endpoint, "error", f"HTTP {outcome.status_code}", attempts, started)
    if outcome.status_code not in _WITHHELD_BODY_STATUSES:
        record.error = f"HTTP {outcome.status_code}: {error_detail(outcome)}"
    record.http_status = outcome.status_code
    if request_id_header is not None:
        record.upstream_request_id = outcome.headers.get(request_id_header)
    return record
