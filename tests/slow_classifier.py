"""Python-kind classifiers for gateway processes under test (``kind = "python"``)."""

from __future__ import annotations

import time

SLOW_S = 1.0


def slow_positive(text: str) -> str:
    """Holds a request in flight for ``SLOW_S``, then answers ``positive``."""
    time.sleep(SLOW_S)
    return "positive"
