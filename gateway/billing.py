"""Pricing every call of a request, its total, and what the route's top tier alone would have cost.

A call's cost (``policies.pricing.price_call``):
- token-priced endpoint: ``(tokens_in × usd_per_mtok_in + tokens_out × usd_per_mtok_out) / 10⁶``
  with the upstream's ``usage``, the prompt tokens it read from or wrote to its prompt cache
  charged at the cache's multiples of the input rate (``policies.pricing``); a missing count is
  estimated (prompt: its characters / 4; output: the answer's) and the cost marked
  ``estimated``. A cancelled or timed-out call is billed its prompt tokens only, marked
  ``estimated``; a failed call with no usage costs nothing (hosted APIs do not bill refused
  requests).
- GPU-priced endpoint (``gpu``): ``gpu_seconds × gpus × gpu_hour_usd / 3600``, where the engine's
  ``gpu_seconds`` is the call's time-weighted share of the endpoint (its wall time divided by the
  calls in flight there meanwhile). Cancelled or timed-out calls pay the time they held, marked
  ``estimated``.

The counterfactual (``outcome.counterfactual_usd``) prices one call to every endpoint of the
route's top tier, whatever tier actually answered:
- token-priced: ``(P × usd_per_mtok_in + O × usd_per_mtok_out) / 10⁶``, P the mean prompt tokens the
  request's calls reported (estimated from the prompt's length when none did), O the mean output
  tokens of its answering calls (estimated from their text when none reported usage);
- GPU-priced: ``S × gpus × gpu_hour_usd / 3600``, S the mean GPU seconds of that endpoint's
  answering calls seen by this ``Biller`` so far (this one included), else the request's own mean
  GPU seconds per answering call.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING

from policies.pricing import Cost, Price, estimate_tokens, price_call, worst_case_usd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.config import RouteConfig, Settings
    from gateway.outcome import RequestOutcome
    from providers.base import CallRecord

# Calls that returned an answer (parsable or not): their tokens and GPU time are complete.
_ANSWERED = frozenset({"ok", "unparsable"})
# Calls stopped before their answer: billed for what they are known to have consumed.
_STOPPED = frozenset({"cancelled", "timeout"})


@dataclass(slots=True)
class _RunningMean:
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


class Biller:
    def __init__(self, settings: Settings) -> None:
        table = settings.pricing.gpu_hour_usd
        self._prices = {
            e.name: Price(
                usd_per_mtok_in=e.usd_per_mtok_in,
                usd_per_mtok_out=e.usd_per_mtok_out,
                gpu_hour_usd=None if e.gpu is None else table[e.gpu],
                gpus=e.gpus,
            )
            for e in settings.endpoints
        }
        self._gpu_seconds: dict[str, _RunningMean] = {}

    def bill(self, outcome: RequestOutcome, route: RouteConfig) -> None:
        """Fill each call's cost, the request's total and its top-tier-only counterfactual."""
        for call in outcome.calls:
            cost = self.price(call)
            call.cost_usd = cost.usd
            call.cost_estimated = cost.estimated
            if self._is_gpu_priced(call.endpoint) and call.status in _ANSWERED:
                self._gpu_seconds.setdefault(call.endpoint, _RunningMean()).add(call.gpu_seconds)
        outcome.cost_usd = sum(c.cost_usd for c in outcome.calls)
        outcome.counterfactual_usd = self.counterfactual(outcome, route)

    def worst_case(
        self,
        tiers: Sequence[Sequence[str]],
        prompt_chars: int,
        max_tokens: int,
        deadline_s: float,
    ) -> float:
        """What a request may cost at most (``policies.pricing.worst_case_usd``): every endpoint
        of every tier it may reach, on its prompt's estimated tokens (``prompt_chars`` / 4) and
        ``max_tokens`` out, GPU-priced ones for the route's whole deadline."""
        prompt_tokens = estimate_tokens(" " * prompt_chars)
        prices = [self._prices[endpoint] for tier in tiers for endpoint in tier]
        return worst_case_usd(prices, prompt_tokens, max_tokens, deadline_s)

    def price(self, call: CallRecord) -> Cost:
        price = self._prices[call.endpoint]
        stopped = call.status in _STOPPED
        if price.gpu_hour_usd is not None:
            return price_call(price, 0, 0, call.gpu_seconds, estimated=stopped)
        if stopped:
            tokens_in = call.tokens_in if call.tokens_in is not None else _prompt_tokens(call)
            return price_call(price, tokens_in, 0, 0.0, estimated=True)
        if call.status == "error" and call.tokens_in is None and call.tokens_out is None:
            return Cost(usd=0.0, estimated=False)
        return price_call(
            price,
            call.tokens_in if call.tokens_in is not None else _prompt_tokens(call),
            call.tokens_out if call.tokens_out is not None else estimate_tokens(call.text),
            0.0,
            estimated=call.tokens_in is None or call.tokens_out is None,
            cache_read_tokens=call.cache_read_tokens or 0,
            cache_write_tokens=call.cache_write_tokens or 0,
            cache_write_1h_tokens=call.cache_write_1h_tokens or 0,
        )

    def counterfactual(self, outcome: RequestOutcome, route: RouteConfig) -> float:
        if not outcome.calls:
            return 0.0
        prompt = _mean_prompt_tokens(outcome.calls)
        output = _mean_output_tokens(outcome.calls)
        total = 0.0
        for endpoint in route.tiers[-1]:
            price = self._prices[endpoint]
            seconds = 0.0
            if price.gpu_hour_usd is not None:
                seen = self._gpu_seconds.get(endpoint, _RunningMean()).value
                seconds = seen if seen is not None else _own_mean_gpu_seconds(outcome.calls)
            total += price_call(price, round(prompt), round(output), seconds).usd
        return total

    def _is_gpu_priced(self, endpoint: str) -> bool:
        return self._prices[endpoint].gpu_hour_usd is not None


def _prompt_tokens(call: CallRecord) -> int:
    chars = call.prompt_chars
    # The estimate depends on the text's length only, and the engine passes just the length.
    return estimate_tokens(" " * chars)


def _mean_prompt_tokens(calls: list[CallRecord]) -> float:
    reported = [c.tokens_in for c in calls if c.tokens_in is not None]
    if reported:
        return fmean(reported)
    return fmean(_prompt_tokens(c) for c in calls)


def _mean_output_tokens(calls: list[CallRecord]) -> float:
    answered = [c for c in calls if c.status in _ANSWERED]
    if not answered:
        return 0.0
    reported = [c.tokens_out for c in answered if c.tokens_out is not None]
    if reported:
        return fmean(reported)
    return fmean(estimate_tokens(c.text) for c in answered)


def _own_mean_gpu_seconds(calls: list[CallRecord]) -> float:
    answered = [c.gpu_seconds for c in calls if c.status in _ANSWERED and c.gpu_seconds > 0]
    if answered:
        return fmean(answered)
    held = [c.gpu_seconds for c in calls if c.gpu_seconds > 0]
    return fmean(held) if held else 0.0
