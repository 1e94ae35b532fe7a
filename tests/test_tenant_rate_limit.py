"""``TenantLimiter.admit``: a token bucket per tenant for
``server.max_requests_per_second_per_tenant``, on a clock the test moves."""

from __future__ import annotations

import pytest

from gateway.errors import TooManyRequests
from gateway.tenants import TenantLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admitted(limiter: TenantLimiter, tenant: str, rate: float, count: int) -> int:
    passed = 0
    for _ in range(count):
        try:
            limiter.admit(tenant, rate)
            passed += 1
        except TooManyRequests:
            pass
    return passed


def test_a_burst_of_one_seconds_worth_passes_then_429() -> None:
    limiter = TenantLimiter(clock=Clock())

    assert admitted(limiter, "noisy", 5, 5) == 5
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit("noisy", 5)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.retry_after_s == 1
    assert "max_requests_per_second_per_tenant" in refused.value.message


def test_tokens_come_back_at_the_rate_and_refusals_take_none() -> None:
    clock = Clock()
    limiter = TenantLimiter(clock=clock)
    assert admitted(limiter, "noisy", 10, 100) == 10  # 90 refused, none of them took a token

    clock.now += 0.5
    assert admitted(limiter, "noisy", 10, 100) == 5
    clock.now += 60  # the bucket holds one second's worth, however long it waited
    assert admitted(limiter, "noisy", 10, 100) == 10


def test_over_a_long_run_a_tenant_gets_its_rate_and_no_more() -> None:
    clock = Clock()
    limiter = TenantLimiter(clock=clock)
    passed = 0
    for _ in range(10 * 100):  # 10 s at 100 requests a second against a limit of 20
        passed += admitted(limiter, "noisy", 20, 1)
        clock.now += 0.01

    assert 20 * 10 <= passed <= 20 * 10 + 20  # the rate, plus at most the first burst


def test_tenants_have_their_own_buckets_and_0_is_no_limit() -> None:
    limiter = TenantLimiter(clock=Clock())
    assert admitted(limiter, "noisy", 2, 10) == 2
    assert admitted(limiter, "good", 2, 2) == 2
    assert admitted(limiter, "anyone", 0, 1000) == 1000


def test_below_one_a_second_retry_after_is_the_wait_for_the_next_token() -> None:
    clock = Clock()
    limiter = TenantLimiter(clock=clock)
    limiter.admit("slow", 0.25)  # the bucket holds at least one request
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit("slow", 0.25)
    assert refused.value.retry_after_s == 4
    clock.now += 3.5
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit("slow", 0.25)
    assert refused.value.retry_after_s == 1
    clock.now += 0.5
    limiter.admit("slow", 0.25)
