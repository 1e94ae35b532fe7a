"""Known-answer billing: every call priced, the request's total and its counterfactual."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.billing import Biller
from gateway.config import Settings, parse_settings
from tests.ledger_fixtures import call, outcome

MICRO = 1e-6


def _settings(**extra: Any) -> Settings:
    return parse_settings(
        {
            "endpoints": [
                {
                    "name": "hosted",
                    "kind": "python",
                    "function": "m:f",
                    "usd_per_mtok_in": 0.15,
                    "usd_per_mtok_out": 0.60,
                },
                {
                    "name": "hosted-b",
                    "kind": "python",
                    "function": "m:f",
                    "usd_per_mtok_in": 0.10,
                    "usd_per_mtok_out": 0.20,
                },
                {
                    "name": "large",
                    "kind": "python",
                    "function": "m:f",
                    "usd_per_mtok_in": 2.0,
                    "usd_per_mtok_out": 8.0,
                },
                {"name": "gpu-a100", "kind": "python", "function": "m:f", "gpu": "A100", "gpus": 2},
                {"name": "gpu-h100", "kind": "python", "function": "m:f", "gpu": "H100"},
            ],
            "routes": {
                "tokens": {
                    "labels": ["positive", "negative"],
                    "tiers": [["hosted", "hosted-b"], ["large"]],
                },
                "gpus": {"labels": ["positive", "negative"], "tiers": [["gpu-a100"], ["gpu-h100"]]},
            },
            **extra,
        }
    )


SETTINGS = _settings()


def test_per_token_cost_to_the_micro_dollar() -> None:
    record = call("hosted", tokens_in=1234, tokens_out=56)
    cost = Biller(SETTINGS).price(record)
    # 1234 × $0.15/M + 56 × $0.60/M = $0.0001851 + $0.0000336
    assert cost.usd == pytest.approx(0.0002187, abs=MICRO / 1000)
    assert round(cost.usd / MICRO) == 219
    assert not cost.estimated


def test_missing_usage_is_estimated_from_text_length() -> None:
    record = call("hosted", tokens_in=None, tokens_out=None, text="negative", prompt_chars=400)
    cost = Biller(SETTINGS).price(record)
    # 400 prompt characters ≈ 100 tokens; "negative" (8 characters) ≈ 2 tokens.
    assert cost.usd == pytest.approx((100 * 0.15 + 2 * 0.60) / 1e6)
    assert cost.estimated


def test_gpu_hour_cost_of_two_overlapping_calls_halves_the_overlap() -> None:
    # A runs 0–10 s and B 5–15 s on one endpoint; each had it alone for 5 s and shared it for
    # 5 s, so the engine's meter gives each 5 + 5/2 = 7.5 GPU seconds.
    first = call("gpu-a100", gpu_seconds=5 + 5 / 2)
    second = call("gpu-a100", gpu_seconds=5 / 2 + 5)
    request = outcome(route="gpus", calls=[first, second])
    Biller(SETTINGS).bill(request, SETTINGS.routes["gpus"])
    each = 7.5 * 2 * 1.29 / 3600  # seconds × gpus × A100 $/h / 3600
    assert first.cost_usd == pytest.approx(each, rel=1e-12)
    assert second.cost_usd == pytest.approx(each, rel=1e-12)
    assert request.cost_usd == pytest.approx(15 * 2 * 1.29 / 3600, rel=1e-12)
    assert not first.cost_estimated


def test_gpu_price_follows_the_configured_table() -> None:
    settings = _settings(pricing={"gpu_hour_usd": {"A100": 2.0}})
    cost = Biller(settings).price(call("gpu-a100", gpu_seconds=36.0))
    assert cost.usd == pytest.approx(36 * 2 * 2.0 / 3600)


def test_cancelled_hosted_call_pays_its_prompt_tokens_only() -> None:
    record = call(
        "hosted", status="cancelled", text=None, tokens_in=None, tokens_out=None, prompt_chars=800
    )
    cost = Biller(SETTINGS).price(record)
    assert cost.usd == pytest.approx(200 * 0.15 / 1e6)
    assert cost.estimated


def test_cancelled_hosted_call_with_reported_prompt_uses_it() -> None:
    record = call("hosted", status="timeout", text=None, tokens_in=321, tokens_out=None)
    cost = Biller(SETTINGS).price(record)
    assert cost.usd == pytest.approx(321 * 0.15 / 1e6)
    assert cost.estimated


def test_cancelled_gpu_call_pays_the_time_it_held() -> None:
    record = call("gpu-h100", status="cancelled", text=None, gpu_seconds=1.8)
    cost = Biller(SETTINGS).price(record)
    assert cost.usd == pytest.approx(1.8 * 2.49 / 3600)
    assert cost.estimated


def test_failed_call_without_usage_costs_nothing() -> None:
    record = call("hosted", status="error", text=None, tokens_in=None, tokens_out=None)
    cost = Biller(SETTINGS).price(record)
    assert cost.usd == 0.0
    assert not cost.estimated


def test_request_cost_is_the_sum_of_its_calls() -> None:
    calls = [
        call("hosted", tokens_in=100, tokens_out=2),
        call("hosted-b", tokens_in=120, tokens_out=3),
        call("large", tier=1, tokens_in=110, tokens_out=1),
    ]
    request = outcome(route="tokens", tier=1, calls=calls)
    Biller(SETTINGS).bill(request, SETTINGS.routes["tokens"])
    expected = (100 * 0.15 + 2 * 0.6 + 120 * 0.1 + 3 * 0.2 + 110 * 2.0 + 1 * 8.0) / 1e6
    assert request.cost_usd == pytest.approx(expected, rel=1e-12)
    assert [c.cost_usd for c in calls] == pytest.approx(
        [(100 * 0.15 + 2 * 0.6) / 1e6, (120 * 0.1 + 3 * 0.2) / 1e6, (110 * 2.0 + 8.0) / 1e6]
    )


def test_token_counterfactual_prices_mean_tokens_on_the_top_tier() -> None:
    calls = [
        call("hosted", tokens_in=100, tokens_out=2),
        call("hosted-b", tokens_in=110, tokens_out=4),
    ]
    request = outcome(route="tokens", calls=calls)
    Biller(SETTINGS).bill(request, SETTINGS.routes["tokens"])
    # Mean prompt 105 tokens, mean output 3 tokens, at the top tier's $2/M in and $8/M out.
    assert request.counterfactual_usd == pytest.approx((105 * 2.0 + 3 * 8.0) / 1e6, rel=1e-12)


def test_token_counterfactual_ignores_output_of_calls_that_gave_no_answer() -> None:
    calls = [
        call("hosted", tokens_in=100, tokens_out=2),
        call("hosted-b", status="cancelled", text=None, tokens_in=100, tokens_out=None),
    ]
    request = outcome(route="tokens", calls=calls)
    Biller(SETTINGS).bill(request, SETTINGS.routes["tokens"])
    assert request.counterfactual_usd == pytest.approx((100 * 2.0 + 2 * 8.0) / 1e6, rel=1e-12)


def test_gpu_counterfactual_uses_the_top_endpoints_mean_time_seen_so_far() -> None:
    biller = Biller(SETTINGS)
    route = SETTINGS.routes["gpus"]
    for seconds in (2.0, 4.0):
        escalated = outcome(
            route="gpus",
            tier=1,
            calls=[
                call("gpu-a100", gpu_seconds=1.0),
                call("gpu-h100", tier=1, gpu_seconds=seconds),
            ],
        )
        biller.bill(escalated, route)
    exited = outcome(route="gpus", calls=[call("gpu-a100", gpu_seconds=1.0)])
    biller.bill(exited, route)
    # The H100 answered in 2 s and 4 s so far: 3 s on average, × 1 GPU × $2.49/h.
    assert exited.counterfactual_usd == pytest.approx(3.0 * 2.49 / 3600, rel=1e-12)


def test_gpu_counterfactual_falls_back_to_the_requests_own_time() -> None:
    request = outcome(
        route="gpus", calls=[call("gpu-a100", gpu_seconds=1.0), call("gpu-a100", gpu_seconds=3.0)]
    )
    Biller(SETTINGS).bill(request, SETTINGS.routes["gpus"])
    assert request.counterfactual_usd == pytest.approx(2.0 * 2.49 / 3600, rel=1e-12)


def test_request_without_calls_costs_nothing_either_way() -> None:
    request = outcome(route="tokens", calls=[])
    Biller(SETTINGS).bill(request, SETTINGS.routes["tokens"])
    assert (request.cost_usd, request.counterfactual_usd) == (0.0, 0.0)
