"""The circuit breaker: opens after repeated failures, probes after a cool-down, closes on success.

A fake clock and a small scripted provider keep every test exact; ordering is by events.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import pytest

from gateway.config import RouteConfig, parse_settings
from gateway.engine import CascadeEngine
from gateway.plan import CoEOverrides, make_plan
from providers import build_providers, make_http_client
from providers.base import CallRecord, CallRequest, CallStatus, Provider
from providers.breaker import (
    CIRCUIT_OPEN,
    BreakerPolicy,
    BreakerProvider,
    BreakerState,
    verdict,
)

pytestmark = pytest.mark.anyio

REQUEST = CallRequest(messages=({"role": "user", "content": "Good?"},))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted(Provider):
    """Answers with the scripted records in order (then ``ok``); a record may wait on an event."""

    def __init__(self, name: str = "ep") -> None:
        self.name = name
        self.calls = 0
        self._script: deque[tuple[CallRecord, anyio.Event | None]] = deque()
        self.entered = anyio.Event()

    def then(self, status: CallStatus, *, http: int | None = None,
             hold: anyio.Event | None = None) -> Scripted:
        record = CallRecord(endpoint=self.name, status=status, text="yes")
        if http is not None:
            record.http_status = http
        self._script.append((record, hold))
        return self

    async def complete(self, request: CallRequest) -> CallRecord:
        self.calls += 1
        record, hold = (
            self._script.popleft()
            if self._script
            else (CallRecord(endpoint=self.name, status="ok", text="yes"), None)
        )
        if hold is not None:
            self.entered.set()
            await hold.wait()
        return record


def breaker(
    inner: Provider, clock: Clock, failures: int = 3, cooldown_s: float = 10.0
) -> tuple[BreakerProvider, list[BreakerState]]:
    states: list[BreakerState] = []
    wrapped = BreakerProvider(
        inner,
        BreakerPolicy(failures=failures, cooldown_s=cooldown_s),
        clock=clock,
        on_state_change=lambda name, state: states.append(state),
    )
    return wrapped, states


async def fail_times(provider: BreakerProvider, count: int) -> list[CallRecord]:
    return [await provider.complete(REQUEST) for _ in range(count)]


async def test_opens_after_consecutive_failures_and_answers_at_once_without_calling() -> None:
    inner = Scripted().then("error").then("timeout").then("error")
    provider, states = breaker(inner, Clock())

    await fail_times(provider, 3)
    refused = await provider.complete(REQUEST)

    assert provider.state == "open"
    assert states == ["closed", "open"]
    assert inner.calls == 3
    assert (refused.status, refused.error, refused.attempts) == ("error", CIRCUIT_OPEN, 0)


async def test_a_success_between_failures_resets_the_count() -> None:
    inner = Scripted().then("error").then("error").then("ok").then("error").then("error")
    provider, _ = breaker(inner, Clock())

    await fail_times(provider, 5)

    assert provider.state == "closed"


async def test_after_the_cool_down_one_probe_passes_and_its_success_closes() -> None:
    clock = Clock()
    inner = Scripted().then("error").then("error").then("error")
    provider, states = breaker(inner, clock)
    await fail_times(provider, 3)

    clock.now += 9.9
    still_open = await provider.complete(REQUEST)
    clock.now += 0.1
    probe = await provider.complete(REQUEST)

    assert still_open.error == CIRCUIT_OPEN
    assert probe.status == "ok"
    assert provider.state == "closed"
    assert states == ["closed", "open", "half_open", "closed"]
    assert inner.calls == 4


async def test_a_failed_probe_opens_again_for_a_whole_cool_down() -> None:
    clock = Clock()
    inner = Scripted().then("error").then("error").then("error").then("timeout")
    provider, states = breaker(inner, clock)
    await fail_times(provider, 3)

    clock.now += 10
    await provider.complete(REQUEST)
    clock.now += 9.9
    refused = await provider.complete(REQUEST)

    assert states == ["closed", "open", "half_open", "open"]
    assert refused.error == CIRCUIT_OPEN
    assert inner.calls == 4


async def test_while_the_probe_runs_other_calls_are_refused() -> None:
    clock = Clock()
    release = anyio.Event()
    inner = Scripted().then("error").then("error").then("error").then("ok", hold=release)
    provider, _ = breaker(inner, clock)
    await fail_times(provider, 3)
    clock.now += 10
    results: list[CallRecord] = []

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(results, provider))
        await inner.entered.wait()
        refused = await provider.complete(REQUEST)
        assert provider.state == "half_open"
        release.set()

    assert refused.error == CIRCUIT_OPEN
    assert results[0].status == "ok"
    assert provider.state == "closed"
    assert inner.calls == 4


async def _append(results: list[CallRecord], provider: Provider) -> None:
    results.append(await provider.complete(REQUEST))


async def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    inner = Scripted().then("error").then("error").then("error").then("ok", hold=anyio.Event())
    provider, _ = breaker(inner, clock)
    await fail_times(provider, 3)
    clock.now += 10

    async with anyio.create_task_group() as group:
        group.start_soon(provider.complete, REQUEST)
        await inner.entered.wait()
        group.cancel_scope.cancel()
    probe = await provider.complete(REQUEST)

    assert probe.status == "ok"
    assert provider.state == "closed"


async def test_calls_started_before_the_breaker_opened_do_not_move_it() -> None:
    clock = Clock()
    release = anyio.Event()
    inner = Scripted().then("ok", hold=release).then("error").then("error").then("error")
    provider, states = breaker(inner, clock)
    results: list[CallRecord] = []

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(results, provider))
        await inner.entered.wait()
        await fail_times(provider, 3)
        release.set()

    assert results[0].status == "ok"
    assert provider.state == "open"
    assert states == ["closed", "open"]


@pytest.mark.parametrize("http", [400, 404, 413, 422])
async def test_errors_the_request_caused_never_open_it(http: int) -> None:
    inner = Scripted()
    for _ in range(5):
        inner.then("error", http=http)
    provider, _ = breaker(inner, Clock())

    await fail_times(provider, 5)

    assert provider.state == "closed"


@pytest.mark.parametrize("http", [408, 429, 500, 502, 503])
async def test_errors_of_the_endpoint_open_it(http: int) -> None:
    inner = Scripted().then("error", http=http).then("error", http=http).then("error", http=http)
    provider, _ = breaker(inner, Clock())

    await fail_times(provider, 3)

    assert provider.state == "open"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (CallRecord(endpoint="e", status="ok"), "success"),
        (CallRecord(endpoint="e", status="cancelled"), "neutral"),
        (CallRecord(endpoint="e", status="error", attempts=0), "neutral"),
        (CallRecord(endpoint="e", status="timeout"), "failure"),
        (CallRecord(endpoint="e", status="error", error="ConnectError"), "failure"),
    ],
)
def test_verdicts(record: CallRecord, expected: str) -> None:
    assert verdict(record) == expected


def test_a_policy_must_open_after_at_least_one_failure() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BreakerPolicy(failures=0)


async def test_an_open_member_still_counts_in_the_denominator_so_unanimity_escalates() -> None:
    clock = Clock()
    dead = Scripted("c").then("error").then("error").then("error")
    guarded, _ = breaker(dead, clock)
    await fail_times(guarded, 3)
    providers: dict[str, Provider] = {
        "a": Scripted("a"),
        "b": Scripted("b"),
        "c": guarded,
        "big": Scripted("big"),
    }
    route = RouteConfig.model_validate(
        {"labels": ["yes", "no"], "threshold": 1, "tiers": [["a", "b", "c"], ["big"]]}
    )
    plan = make_plan("r", route, CoEOverrides(), {})
    engine = CascadeEngine(providers)

    outcomes = [
        await engine.run(plan, [{"role": "user", "content": "Good?"}], request_id=f"r{i}",
                         tenant="t")
        for i in range(5)
    ]

    assert all(o.tier == 1 and o.decision == "escalated" for o in outcomes)
    open_calls = [c for o in outcomes for c in o.calls if c.endpoint == "c"]
    assert [c.error for c in open_calls] == [CIRCUIT_OPEN] * 5
    assert dead.calls == 3


def _endpoints(**fields: Any) -> dict[str, Any]:
    return {
        "endpoints": [
            {"name": "h", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", **fields},
            {"name": "p", "kind": "python", "function": "providers.classifiers:vader_sentiment"},
        ]
    }


async def test_http_endpoints_get_a_breaker_with_the_configured_policy() -> None:
    settings = parse_settings(_endpoints(breaker_failures=2, breaker_cooldown_s=0.5))
    seen: list[tuple[str, str]] = []
    async with make_http_client() as client:
        providers = build_providers(
            settings.endpoints,
            client,
            on_breaker_change=lambda name, state: seen.append((name, state)),
        )

    assert isinstance(providers["h"], BreakerProvider)
    assert not isinstance(providers["p"], BreakerProvider)
    assert seen == [("h", "closed")]


async def test_breaker_failures_zero_means_no_breaker() -> None:
    settings = parse_settings(_endpoints(breaker_failures=0))
    async with make_http_client() as client:
        providers = build_providers(settings.endpoints, client)

    assert not isinstance(providers["h"], BreakerProvider)
