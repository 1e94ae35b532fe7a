"""The retry rules as pure functions, and the tenacity loop that runs them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from providers.retry import (
    Outcome,
    RetryPolicy,
    retry_after_s,
    retry_delay_s,
    send_with_retries,
    should_retry,
)

POLICY = RetryPolicy(initial_delay_s=0.1, max_delay_s=1.0, jitter=0.25, max_retry_after_s=2.0)
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert should_retry(response(status))


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 408, 422, 501])
def test_final_statuses(status: int) -> None:
    assert not should_retry(response(status))


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset by peer"),
    ],
)
def test_errors_before_any_response_are_retried(error: httpx.RequestError) -> None:
    assert should_retry(error)


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("slow"), httpx.PoolTimeout("pool"), httpx.UnsupportedProtocol("ftp")],
)
def test_other_errors_are_final(error: httpx.RequestError) -> None:
    assert not should_retry(error)


def test_retry_after_in_seconds() -> None:
    assert retry_after_s(response(429, **{"retry-after": "3"})) == 3.0


def test_retry_after_ms_wins() -> None:
    headers = {"retry-after-ms": "250", "retry-after": "3"}
    assert retry_after_s(response(429, **headers)) == 0.25


def test_retry_after_as_http_date() -> None:
    when = format_datetime(NOW + timedelta(seconds=4), usegmt=True)
    assert retry_after_s(response(503, **{"retry-after": when}), now=NOW) == 4.0


def test_retry_after_date_in_the_past_is_zero() -> None:
    when = format_datetime(NOW - timedelta(seconds=4), usegmt=True)
    assert retry_after_s(response(503, **{"retry-after": when}), now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_unreadable_retry_after_is_ignored(value: str) -> None:
    assert retry_after_s(response(429, **{"retry-after": value})) is None


def test_retry_after_is_capped() -> None:
    delay = retry_delay_s(response(429, **{"retry-after": "5"}), 0, 10.0, POLICY, 0.5)
    assert delay == POLICY.max_retry_after_s


def test_retry_after_is_honoured_below_the_cap() -> None:
    delay = retry_delay_s(response(429, **{"retry-after": "1"}), 0, 10.0, POLICY, 0.5)
    assert delay == 1.0


def test_retry_after_beyond_the_budget_means_give_up() -> None:
    delay = retry_delay_s(response(429, **{"retry-after": "5"}), 0, 4.0, POLICY, 0.5)
    assert delay == math.inf


@pytest.mark.parametrize(("retries_done", "expected"), [(0, 0.1), (1, 0.2), (2, 0.4), (5, 1.0)])
def test_backoff_doubles_up_to_the_maximum(retries_done: int, expected: float) -> None:
    assert retry_delay_s(response(503), retries_done, 10.0, POLICY, 0.0) == pytest.approx(expected)


def test_jitter_shortens_the_backoff() -> None:
    assert retry_delay_s(httpx.ConnectError("x"), 0, 10.0, POLICY, 1.0) == pytest.approx(0.075)


@pytest.mark.anyio
async def test_send_with_retries_gives_up_when_the_wait_does_not_fit() -> None:
    sent: list[int] = []

    async def send() -> Outcome:
        sent.append(1)
        return response(503)

    outcome = await send_with_retries(send, max_retries=5, remaining_s=lambda: 0.05, policy=POLICY)
    assert isinstance(outcome, httpx.Response) and outcome.status_code == 503
    assert len(sent) == 1


@pytest.mark.anyio
async def test_send_with_retries_lets_exceptions_through() -> None:
    async def send() -> Outcome:
        raise RuntimeError("not an outcome")

    with pytest.raises(RuntimeError, match="not an outcome"):
        await send_with_retries(send, max_retries=3, remaining_s=lambda: 10.0, policy=POLICY)
