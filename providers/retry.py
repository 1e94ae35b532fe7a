"""When an upstream call is tried again, and after how long.

The rules are pure functions (``should_retry``, ``retry_delay_s``) over one attempt's outcome: the
response, or the transport error that stood in for one. ``send_with_retries`` runs them with
tenacity. The caller bounds the whole call with its endpoint's timeout; a wait that would not fit
in what is left of it ends the call instead.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeAlias

import anyio
import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_result

from providers._constants import (
    INITIAL_RETRY_DELAY_S,
    MAX_RETRY_AFTER_S,
    MAX_RETRY_DELAY_S,
    RETRY_JITTER,
    RETRYABLE_STATUS_CODES,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Outcome: TypeAlias = httpx.Response | httpx.RequestError

# Errors raised before the upstream could have answered: the request never reached a model, so
# sending it again costs nothing. A read timeout is not among them: the model may be working, and
# the endpoint's timeout, not a second try, bounds that call.
_RETRYABLE_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                     httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_delay_s: float = INITIAL_RETRY_DELAY_S
    max_delay_s: float = MAX_RETRY_DELAY_S
    jitter: float = RETRY_JITTER
    max_retry_after_s: float = MAX_RETRY_AFTER_S


DEFAULT_RETRY_POLICY = RetryPolicy()


def should_retry(outcome: Outcome) -> bool:
    """Whether an attempt's outcome is worth another attempt."""
    if isinstance(outcome, httpx.Response):
        if outcome.status_code in RETRYABLE_STATUS_CODES:
            logger.debug("retryable status %d", outcome.status_code)
            return True
        logger.debug("status %d is final", outcome.status_code)
        return False
    if isinstance(outcome, _RETRYABLE_ERRORS):
        logger.debug("retryable transport error %s", type(outcome).__name__)
        return True
    logger.debug("transport error %s is final", type(outcome).__name__)
    return False


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The wait the upstream asked for (``retry-after-ms``, or ``Retry-After`` in seconds or as
    an HTTP date), or None when it asked for none or said something unreadable."""
    millis = response.headers.get("retry-after-ms")
    if millis is not None:
        seconds = _non_negative(millis)
        return None if seconds is None else seconds / 1000
    value = response.headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _non_negative(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < math.inf else None


def retry_delay_s(
    outcome: Outcome, retries_done: int, remaining_s: float, policy: RetryPolicy, rand: float
) -> float:
    """Seconds to wait before the next attempt; ``math.inf`` when the upstream asked for a longer
    wait than the call has left. ``rand`` in [0, 1) draws the jitter."""
    hinted = retry_after_s(outcome) if isinstance(outcome, httpx.Response) else None
    if hinted is not None:
        if hinted > remaining_s:
            logger.debug("upstream asks for %.3f s, the call has %.3f s left", hinted, remaining_s)
            return math.inf
        logger.debug("honouring a retry-after of %.3f s", hinted)
        return min(hinted, policy.max_retry_after_s)
    delay = min(policy.initial_delay_s * 2.0**retries_done, policy.max_delay_s)
    delay *= 1 - policy.jitter * rand
    logger.debug("backoff before retry %d: %.3f s", retries_done + 1, delay)
    return delay


async def send_with_retries(
    send: Callable[[], Awaitable[Outcome]],
    *,
    max_retries: int,
    remaining_s: Callable[[], float],
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> Outcome:
    """Call ``send`` until its outcome is final, retries run out, or the next wait would not fit
    in ``remaining_s()``; return the last outcome. What ``send`` raises (cancellation) goes up."""

    def wait(state: RetryCallState) -> float:
        return retry_delay_s(
            _outcome(state), state.attempt_number - 1, remaining_s(), policy, random.random()
        )

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number > max_retries:
            logger.debug("giving up after %d attempts", state.attempt_number)
            return True
        left = remaining_s()
        if state.upcoming_sleep >= left:
            logger.debug("giving up: no room for another attempt in the %.3f s left", left)
            return True
        return False

    first = await send()
    if isinstance(first, httpx.Response) and first.is_success:
        # Most calls end here; tenacity's bookkeeping would add tens of microseconds to each.
        return first
    made = [first]

    async def attempt() -> Outcome:
        return made.pop() if made else await send()

    retrying = AsyncRetrying(
        retry=retry_if_result(should_retry),
        wait=wait,
        stop=stop,
        sleep=anyio.sleep,
        retry_error_callback=_outcome,
        reraise=True,
    )
    outcome: Outcome = await retrying(attempt)
    return outcome


def _outcome(state: RetryCallState) -> Outcome:
    assert state.outcome is not None  # tenacity consults wait, stop and callback after an attempt
    result: Outcome = state.outcome.result()
    return result
