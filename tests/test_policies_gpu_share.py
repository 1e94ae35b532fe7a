"""Time-weighted GPU shares of calls batched together on one endpoint."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.gpu_share import GpuShareMeter


def test_two_overlapping_calls_share_the_overlap() -> None:
    meter = GpuShareMeter()
    a = meter.begin("gpu", 0.0)
    b = meter.begin("gpu", 5.0)
    assert meter.end(a, 10.0) == pytest.approx(7.5)
    assert meter.end(b, 15.0) == pytest.approx(7.5)


def test_a_lone_call_is_charged_its_wall_time() -> None:
    meter = GpuShareMeter()
    ticket = meter.begin("gpu", 100.0)
    assert meter.end(ticket, 103.25) == pytest.approx(3.25)


def test_three_simultaneous_calls_get_a_third_each() -> None:
    meter = GpuShareMeter()
    tickets = [meter.begin("gpu", 0.0) for _ in range(3)]
    assert [meter.end(t, 9.0) for t in tickets] == pytest.approx([3.0, 3.0, 3.0])


def test_a_call_nested_in_a_longer_one() -> None:
    meter = GpuShareMeter()
    long = meter.begin("gpu", 0.0)
    short = meter.begin("gpu", 2.0)
    assert meter.end(short, 4.0) == pytest.approx(1.0)
    assert meter.end(long, 10.0) == pytest.approx(2.0 + 1.0 + 6.0)


def test_endpoints_do_not_share_with_each_other() -> None:
    meter = GpuShareMeter()
    a = meter.begin("gpu-a", 0.0)
    b = meter.begin("gpu-b", 0.0)
    assert meter.end(a, 4.0) == pytest.approx(4.0)
    assert meter.end(b, 4.0) == pytest.approx(4.0)


def test_an_idle_gap_is_charged_to_nobody() -> None:
    meter = GpuShareMeter()
    meter.end(meter.begin("gpu", 0.0), 1.0)
    assert meter.end(meter.begin("gpu", 1000.0), 1002.0) == pytest.approx(2.0)


def test_a_ticket_ends_once() -> None:
    meter = GpuShareMeter()
    ticket = meter.begin("gpu", 0.0)
    meter.end(ticket, 1.0)
    with pytest.raises(ValueError, match="not in flight"):
        meter.end(ticket, 2.0)


def test_a_clock_read_out_of_order_never_gives_a_negative_share() -> None:
    meter = GpuShareMeter()
    a = meter.begin("gpu", 10.0)
    assert meter.end(a, 9.0) == 0.0


@settings(database=None, derandomize=True)
@given(calls=st.lists(st.tuples(st.integers(0, 100), st.integers(1, 50)), min_size=1, max_size=12))
def test_shares_add_up_to_the_time_the_endpoint_was_busy(calls: list[tuple[int, int]]) -> None:
    events = sorted(
        [(start, 1, i) for i, (start, _) in enumerate(calls)]
        + [(start + length, 0, i) for i, (start, length) in enumerate(calls)]
    )
    meter = GpuShareMeter()
    tickets = {}
    total = 0.0
    for now, is_begin, i in events:
        if is_begin:
            tickets[i] = meter.begin("gpu", float(now))
        else:
            total += meter.end(tickets[i], float(now))
    busy: set[int] = set()
    for start, length in calls:
        busy.update(range(start, start + length))
    assert total == pytest.approx(len(busy))
