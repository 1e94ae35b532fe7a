"""Call pricing and the seed paper's Table 2 "$ per hour" arithmetic."""

from __future__ import annotations

import pytest

from policies.pricing import Cost, Price, blended_hourly_usd, estimate_tokens, price_call

MICRO = 1e-6


def test_token_priced_call_to_the_micro_dollar() -> None:
    cost = price_call(Price(usd_per_mtok_in=0.10, usd_per_mtok_out=0.20), 1234, 56, 0.0)
    # 1234 × 0.10 / 1e6 + 56 × 0.20 / 1e6 = 0.0001234 + 0.0000112
    assert cost.usd == pytest.approx(0.0001346, abs=MICRO / 1000)
    assert cost.estimated is False


def test_hosted_frontier_prices_add_up() -> None:
    cost = price_call(Price(usd_per_mtok_in=2.0, usd_per_mtok_out=8.0), 500_000, 250_000, 3.0)
    assert cost.usd == pytest.approx(3.0, abs=MICRO)


def test_gpu_priced_call_charges_its_gpu_time_share_and_ignores_tokens() -> None:
    price = Price(usd_per_mtok_in=9.0, gpu_hour_usd=1.29, gpus=2)
    # 7.5 s × 2 GPUs × $1.29 / 3600 s
    assert price_call(price, 10_000, 10_000, 7.5).usd == pytest.approx(0.005375, abs=MICRO / 1000)


def test_a_free_endpoint_costs_nothing() -> None:
    assert price_call(Price(), 1000, 1000, 10.0) == Cost(usd=0.0, estimated=False)


def test_estimated_flag_is_carried() -> None:
    assert price_call(Price(usd_per_mtok_in=1.0), 4, 0, 0.0, estimated=True).estimated is True


@pytest.mark.parametrize(
    ("text", "tokens"),
    [(None, 0), ("", 0), ("a", 1), ("abcd", 1), ("abcdef", 2), ("abcdefgh", 2), ("x" * 400, 100)],
)
def test_estimate_tokens_is_about_four_characters_each(text: str | None, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_table_2_dollars_per_hour_is_reproduced() -> None:
    exits = [0.73, 0.09, 0.08, 0.10]
    hourly = [0.50, 0.80, 1.29, 2.49]  # V100, A6000, A100, H100 (Lambda Cloud, 2024)
    usd = blended_hourly_usd(exits, hourly)
    assert usd == pytest.approx(0.7892)
    assert round(usd, 2) == 0.79


def test_a_single_tier_costs_its_own_hourly_price() -> None:
    assert blended_hourly_usd([1.0], [2.49]) == pytest.approx(2.49)


def test_blended_hourly_needs_one_price_per_tier() -> None:
    with pytest.raises(ValueError, match="3 tier prices"):
        blended_hourly_usd([0.5, 0.5], [1.0, 2.0, 3.0])
