"""gateway.stats.percentile: one definition (linear between closest ranks, numpy's default)."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.stats import percentile

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=200)
qs = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
try:  # numpy is not a dependency; the venv usually has it through matplotlib
    import numpy
except ImportError:  # pragma: no cover
    numpy = None


def test_the_textbook_values() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 25) == 1.75  # unsorted input, type 7
    assert percentile([float(i) for i in range(1, 101)], 90) == pytest.approx(90.1)
    assert percentile([float(i) for i in range(101)], 95) == pytest.approx(95.0)
    assert percentile([10, 20], 30) == pytest.approx(13.0)  # ints are fine


def test_q_0_and_100_are_exactly_the_minimum_and_maximum() -> None:
    values = [0.1, 1e16, 3.0, -7.25, 1.0]
    assert percentile(values, 0) == -7.25
    assert percentile(values, 100) == 1e16


def test_one_value_is_every_percentile_of_itself() -> None:
    for q in (0, 1, 50, 99.9, 100):
        assert percentile([42.5], q) == 42.5


def test_the_input_is_left_alone() -> None:
    values = [3.0, 1.0, 2.0]
    percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@pytest.mark.parametrize("values", [[], ()])
def test_no_values_is_an_error_not_zero(values: list[float]) -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile(values, 50)


@pytest.mark.parametrize("q", [-0.1, 100.1, math.nan, math.inf])
def test_q_outside_0_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0, 2.0], q)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or an infinity"):
        percentile([1.0, bad, 2.0], 50)


@given(samples, qs)
def test_it_lies_between_the_closest_ranks(values: list[float], q: float) -> None:
    ordered = sorted(values)
    h = q / 100 * (len(ordered) - 1)
    result = percentile(values, q)
    assert ordered[math.floor(h)] <= result <= ordered[math.ceil(h)]


@given(samples, qs, qs)
def test_it_grows_with_q(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    assert percentile(values, low) <= percentile(values, high)


@given(st.lists(finite, min_size=2, max_size=200), st.integers(min_value=1, max_value=99))
def test_whole_q_equals_statistics_quantiles_inclusive(values: list[float], q: int) -> None:
    expected = statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    scale = max(1.0, max(abs(v) for v in values))
    assert math.isclose(percentile(values, q), expected, rel_tol=1e-12, abs_tol=1e-12 * scale)


@pytest.mark.skipif(numpy is None, reason="numpy is not installed")
@given(samples, qs)
def test_it_equals_numpy_linear(values: list[float], q: float) -> None:
    expected = float(numpy.percentile(numpy.asarray(values, dtype=float), q, method="linear"))
    assert percentile(values, q) == expected
