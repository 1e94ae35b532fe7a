"""Two cheap, real sentiment classifiers for ``kind = "python"`` endpoints.

Both run offline with no model download; each is imported on first use and loaded once. Their
packages come with the ``classifiers`` extra (``pip install 'coe-gateway[classifiers]'``).
``function = "providers.classifiers:vader_sentiment"`` (or ``textblob_sentiment``).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

Sentiment = Literal["positive", "negative"]

# Calls arrive from worker threads; the first one loads a lexicon, which must happen once.
_LOAD_LOCK = threading.Lock()


def vader_sentiment(text: str) -> Sentiment:
    """VADER's compound score: ≥ 0 is positive."""
    with _LOAD_LOCK:
        score = _vader()
    return "positive" if score(text) >= 0 else "negative"


def textblob_sentiment(text: str) -> Sentiment:
    """TextBlob's pattern-analyser polarity: ≥ 0 is positive."""
    with _LOAD_LOCK:
        score = _textblob()
    return "positive" if score(text) >= 0 else "negative"


@cache
def _vader() -> Callable[[str], float]:
    try:
        from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]
            SentimentIntensityAnalyzer,
        )
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None

    analyzer = SentimentIntensityAnalyzer()

    def compound(text: str) -> float:
        return float(analyzer.polarity_scores(text)["compound"])

    return compound


@cache
def _textblob() -> Callable[[str], float]:
    try:
        from textblob import TextBlob  # type: ignore[import-untyped]
    except ModuleNotFoundError as exc:
        raise _missing(exc) from None

    # The lexicon fills lazily, and not thread-safely, on the first analysis: do it here, once.
    _ = TextBlob("warm").sentiment

    def polarity(text: str) -> float:
        return float(TextBlob(text).sentiment.polarity)

    return polarity


def _missing(exc: ModuleNotFoundError) -> RuntimeError:
    return RuntimeError(
        f"{exc.name} is not installed: pip install 'coe-gateway[classifiers]'"
    )
