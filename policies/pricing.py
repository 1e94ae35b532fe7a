"""What a call costs: per token for hosted APIs, per GPU-second for self-hosted endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_SECONDS_PER_HOUR = 3600.0
_TOKENS_PER_MTOK = 1_000_000.0
_CHARS_PER_TOKEN = 4

# Prompt-cache prices as multiples of the base input price, as Anthropic bills them: a write to
# the 5-minute cache 1.25×, to the 1-hour cache 2×, a read ("cache hits and refreshes") 0.1×.
# https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing", prompt caching).
CACHE_WRITE_MULTIPLIER = 1.25
CACHE_WRITE_1H_MULTIPLIER = 2.0
CACHE_READ_MULTIPLIER = 0.1


@dataclass(frozen=True, slots=True)
class Price:
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    # Per GPU; set for self-hosted endpoints, whose calls are then priced by GPU time alone.
    gpu_hour_usd: float | None = None
    gpus: int = 1
    # What cached prompt tokens cost, as multiples of ``usd_per_mtok_in``.
    cache_write_multiplier: float = CACHE_WRITE_MULTIPLIER
    cache_write_1h_multiplier: float = CACHE_WRITE_1H_MULTIPLIER
    cache_read_multiplier: float = CACHE_READ_MULTIPLIER


@dataclass(frozen=True, slots=True)
class Cost:
    usd: float
    # True when the token counts were estimated because the upstream reported no usage.
    estimated: bool


def estimate_tokens(text: str | None) -> int:
    """About one token per four characters (English with common tokenizers); 0 for no text."""
    if not text:
        return 0
    return max(1, (len(text) + _CHARS_PER_TOKEN // 2) // _CHARS_PER_TOKEN)


def price_call(
    price: Price,
    tokens_in: int,
    tokens_out: int,
    gpu_seconds: float,
    *,
    estimated: bool = False,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> Cost:
    """A GPU-priced endpoint charges ``gpu_seconds × gpus × gpu_hour_usd / 3600`` and ignores
    tokens (``gpu_seconds`` is the call's share of the endpoint's time, see ``gpu_share``); a
    token-priced one charges its per-million-token rates.

    ``tokens_in`` counts every prompt token; ``cache_read_tokens`` and ``cache_write_tokens`` are
    the parts of it read from and written to a prompt cache (``cache_write_1h_tokens`` the part of
    the writes kept for an hour), charged at the price's multiples of the input rate; the rest
    is charged at the input rate."""
    if price.gpu_hour_usd is not None:
        usd = gpu_seconds * price.gpus * price.gpu_hour_usd / _SECONDS_PER_HOUR
    else:
        usd = (
            _input_units(price, tokens_in, cache_read_tokens, cache_write_tokens,
                         cache_write_1h_tokens) * price.usd_per_mtok_in
            + tokens_out * price.usd_per_mtok_out
        ) / _TOKENS_PER_MTOK
    return Cost(usd=usd, estimated=estimated)


def _input_units(
    price: Price, tokens_in: int, read: int, write: int, write_1h: int
) -> float:
    """Prompt tokens weighted by what each costs relative to an uncached one."""
    if not (read or write):
        return float(tokens_in)
    write_1h = min(write_1h, write)
    uncached = max(0, tokens_in - read - write)
    return (
        uncached
        + (write - write_1h) * price.cache_write_multiplier
        + write_1h * price.cache_write_1h_multiplier
        + read * price.cache_read_multiplier
    )


def worst_case_usd(
    prices: Iterable[Price], prompt_tokens: int, max_tokens: int, deadline_s: float
) -> float:
    """The most one request may cost, reserved against its tenant's budget before any call: one
    call to every endpoint of every tier it may reach (``prices``, one per endpoint and tier),
    each priced as if it read ``prompt_tokens`` at the input rate and wrote all ``max_tokens`` at
    the output rate, or, GPU-priced, held its GPUs for the whole ``deadline_s``
    (``deadline_s × gpus × gpu_hour_usd / 3600``)."""
    return sum(
        price_call(price, prompt_tokens, max_tokens, deadline_s).usd for price in prices
    )


def blended_hourly_usd(exit_fractions: Sequence[float], tier_hourly_usd: Sequence[float]) -> float:
    """The seed paper's Table 2 "$ per hour" of a cascade: Σ_k fraction exiting at tier k × the
    hourly price of tier k.

    Like the paper's table, this charges each request the hourly price of the tier it exits at
    only, not of every tier it ran on: exits of 0.73/0.09/0.08/0.10 over V100/A6000/A100/H100
    ($0.50/0.80/1.29/2.49) give $0.79, the paper's figure, whereas charging every tier a request
    reached (Σ_k fraction exiting at tier ≥ k × price_k) would give $1.20.
    """
    if len(exit_fractions) != len(tier_hourly_usd):
        raise ValueError(
            f"{len(exit_fractions)} exit fractions for {len(tier_hourly_usd)} tier prices"
        )
    return sum(f * usd for f, usd in zip(exit_fractions, tier_hourly_usd, strict=True))
