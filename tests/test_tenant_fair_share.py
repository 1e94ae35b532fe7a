"""Fair shares of a contended gateway: ``gateway.contention.LoopLag`` says when the event loop is
late past ``server.fair_share_loop_lag_ms``, and ``TenantLimiter.hold`` then refuses a tenant that
holds more than its equal share of the requests in flight. On a clock the test moves."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from gateway.config import Settings
from gateway.contention import HOLD_S, LoopLag
from gateway.errors import TooManyRequests
from gateway.reload import needs_restart
from gateway.tenants import ACTIVE_S, TenantLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def holding(stack: ExitStack, limiter: TenantLimiter, tenant: str, count: int) -> None:
    """``count`` requests of ``tenant`` in flight until the stack closes (admitted uncontended)."""
    for _ in range(count):
        stack.enter_context(limiter.hold(tenant, 0))


def test_contended_a_tenant_over_its_equal_share_is_refused_and_another_admitted() -> None:
    limiter = TenantLimiter(Clock())
    with ExitStack() as stack:
        holding(stack, limiter, "noisy", 3)
        holding(stack, limiter, "quiet", 1)

        with pytest.raises(TooManyRequests) as refused:
            stack.enter_context(limiter.hold("noisy", 0, contended=True))
        stack.enter_context(limiter.hold("quiet", 0, contended=True))

        assert limiter.in_flight("noisy") == 3 and limiter.in_flight("quiet") == 2
    assert refused.value.code == "rate_limit_exceeded" and refused.value.retry_after_s == 1
    assert "fair share" in refused.value.message
    assert "server.fair_share_loop_lag_ms" in refused.value.message


def test_uncontended_no_tenant_is_held_to_a_share() -> None:
    limiter = TenantLimiter(Clock())
    with ExitStack() as stack:
        holding(stack, limiter, "quiet", 1)
        holding(stack, limiter, "noisy", 10)

        stack.enter_context(limiter.hold("noisy", 0, contended=False))

        assert limiter.in_flight("noisy") == 11


def test_contended_a_lone_tenant_is_not_refused() -> None:
    limiter = TenantLimiter(Clock())
    with ExitStack() as stack:
        holding(stack, limiter, "only", 10)

        stack.enter_context(limiter.hold("only", 0, contended=True))

        assert limiter.in_flight("only") == 11


def test_contended_tenants_at_equal_shares_are_not_refused() -> None:
    limiter = TenantLimiter(Clock())
    with ExitStack() as stack:
        holding(stack, limiter, "a", 2)
        holding(stack, limiter, "b", 2)

        stack.enter_context(limiter.hold("a", 0, contended=True))
        stack.enter_context(limiter.hold("b", 0, contended=True))

        assert limiter.in_flight("a") == limiter.in_flight("b") == 3


def test_a_tenant_with_nothing_in_flight_keeps_its_share_for_active_s() -> None:
    # A steady tenant of quick requests is mostly at zero in flight; it still has a share.
    clock = Clock()
    limiter = TenantLimiter(clock)
    with limiter.hold("quiet", 0):
        pass
    with ExitStack() as stack:
        holding(stack, limiter, "noisy", 1)
        clock.now += ACTIVE_S / 2

        with pytest.raises(TooManyRequests):
            stack.enter_context(limiter.hold("noisy", 0, contended=True))


def test_a_tenant_quiet_for_longer_than_active_s_has_no_share() -> None:
    clock = Clock()
    limiter = TenantLimiter(clock)
    with limiter.hold("quiet", 0):
        pass
    with ExitStack() as stack:
        holding(stack, limiter, "noisy", 1)
        clock.now += ACTIVE_S + 0.1

        stack.enter_context(limiter.hold("noisy", 0, contended=True))

        assert limiter.in_flight("noisy") == 2


def test_a_late_timer_past_the_threshold_means_contended_for_hold_s() -> None:
    clock = Clock()
    lag = LoopLag(clock)
    assert not lag.contended()

    lag.observe(0.030, threshold_s=0.020)

    assert lag.contended()
    clock.now += HOLD_S - 0.01
    assert lag.contended()
    clock.now += 0.02
    assert not lag.contended()


def test_a_timer_late_within_the_threshold_or_with_threshold_0_is_not_contention() -> None:
    lag = LoopLag(Clock())

    lag.observe(0.020, threshold_s=0.020)
    lag.observe(5.0, threshold_s=0.0)

    assert not lag.contended()


def test_a_reload_may_change_the_fair_share_threshold() -> None:
    running = Settings()
    new = Settings.model_validate({"server": {"fair_share_loop_lag_ms": 50}})

    assert needs_restart(running, new) == []
