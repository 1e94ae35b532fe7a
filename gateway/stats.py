"""The one percentile definition used everywhere in the project (gateway, evaluation, bench/).

"p50", "p95" or "p99" anywhere in this repository means :func:`percentile`: linear
interpolation between the closest ranks, the definition numpy uses by default
(``numpy.percentile(values, q, method="linear")``), type 7 of Hyndman and Fan (1996), and what
``statistics.quantiles(values, n=100, method="inclusive")`` returns for whole-number ``q`` (up
to the last bit of rounding).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (``q`` in [0, 100]), by linear interpolation
    between the closest ranks: Hyndman and Fan's type 7, numpy's default ``"linear"`` method.

    With the ``n`` values sorted as ``x[0] <= … <= x[n-1]``, the percentile sits at position
    ``h = (q / 100) * (n - 1)`` and is ``x[⌊h⌋] + (h - ⌊h⌋) * (x[⌊h⌋+1] - x[⌊h⌋])``. So ``q = 0``
    is the minimum, ``q = 100`` the maximum (exactly, not up to rounding), ``q = 50`` the median
    (the mean of the two middle values when ``n`` is even), and one value is every percentile of
    itself. For whole-number ``q`` from 1 to 99 this is
    ``statistics.quantiles(values, n=100, method="inclusive")[q - 1]`` up to rounding. It is
    written out rather than built on ``statistics.quantiles`` because that yields only evenly
    spaced cut points (no ``q`` = 0, 100 or 99.9) and, on Python 3.11, refuses a single value.
    The arithmetic is numpy's own (``b - (b - a) * (1 - t)`` from ``t = 0.5`` on), so the result
    equals ``numpy.percentile(values, q)`` bit for bit on finite values (tests/test_stats.py).

    Edge cases, decided: an empty ``values`` raises ``ValueError`` (a percentile of nothing is
    not 0 ms; a caller with possibly empty samples checks first and prints "no answers", as
    ``bench/loadgen.py`` does); so do a ``q`` outside [0, 100] or NaN, and a NaN or infinite
    value (sorting them gives no meaningful order). Values need not be sorted; the input is not
    modified.
    """
    if not 0.0 <= q <= 100.0:  # also False for NaN
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if len(values) == 0:
        raise ValueError("percentile of an empty sequence")
    ordered = sorted(float(value) for value in values)
    if not all(math.isfinite(value) for value in ordered):
        raise ValueError("percentile of a sequence holding NaN or an infinity")
    position = (q / 100.0) * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    below, above = ordered[low], ordered[high]
    t = position - low
    if t >= 0.5:
        return above - (above - below) * (1.0 - t)
    return below + (above - below) * t
