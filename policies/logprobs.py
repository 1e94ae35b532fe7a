"""Token log-probabilities as an upstream reports them: the one shape policies read them in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    # The top alternatives at this position, (token, logprob), when the upstream sent them.
    top: tuple[tuple[str, float], ...] = ()


def mean_logprob(logprobs: Sequence[TokenLogprob] | None) -> float | None:
    """The mean logprob of the generated tokens; None without any (the tie-break then skips)."""
    if not logprobs:
        return None
    return sum(t.logprob for t in logprobs) / len(logprobs)
