"""The seed paper's Table 2, reproduced by a report over a ledger built to its exit fractions.

Exits of 0.73/0.09/0.08/0.10 over V100/A6000/A100/H100 tiers (Lambda Cloud 2024 prices
0.50/0.80/1.29/2.49 $/h) blend to 0.79 $/h against 2.49 $/h for the H100 tier alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.billing import Biller
from gateway.config import LedgerConfig, parse_settings
from gateway.ledger import open_ledger
from gateway.reports import cost_report
from tests.ledger_fixtures import BACKENDS, call, ledger_url_for, outcome

GPUS = ("V100", "A6000", "A100", "H100")
EXITS = (73, 9, 8, 10)  # of 100 requests
SECONDS_PER_CALL = 36.0
SETTINGS = parse_settings(
    {
        "endpoints": [
            {"name": gpu.lower(), "kind": "python", "function": "m:f", "gpu": gpu} for gpu in GPUS
        ],
        "routes": {
            "paper": {"labels": ["positive", "negative"], "tiers": [[gpu.lower()] for gpu in GPUS]}
        },
    }
)


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


@pytest.mark.anyio
async def test_table_2_blended_hourly_price(ledger_url: str) -> None:
    biller = Biller(SETTINGS)
    route = SETTINGS.routes["paper"]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        for exit_tier, count in enumerate(EXITS):
            for _ in range(count):
                # A request exiting at tier k ran on every tier up to k, one call each.
                calls = [
                    call(GPUS[tier].lower(), tier=tier, gpu_seconds=SECONDS_PER_CALL)
                    for tier in range(exit_tier + 1)
                ]
                request = outcome(route="paper", tier=exit_tier, calls=calls)
                biller.bill(request, route)
                await ledger.record(request)
        report = await cost_report(ledger, tenant=None, since=None, until=None, group_by="tier")

    assert report["exits_by_tier"] == {"0": 73, "1": 9, "2": 8, "3": 10}
    hourly = report["hourly_usd"]["paper"]
    assert hourly["by_tier"] == {"0": 0.5, "1": 0.8, "2": 1.29, "3": 2.49}
    assert hourly["blended"] == pytest.approx(0.7892, abs=1e-9)
    assert round(hourly["blended"], 2) == 0.79
    assert hourly["top_tier_only"] == 2.49

    # The bill itself charges every tier a request ran on, not only its exit tier.
    calls_per_tier = [sum(EXITS[k:]) for k in range(4)]  # 100, 27, 18, 10
    hours = SECONDS_PER_CALL / 3600
    cost = sum(n * hours * p for n, p in zip(calls_per_tier, (0.5, 0.8, 1.29, 2.49), strict=True))
    assert report["totals"]["cost_usd"] == pytest.approx(cost)
    assert report["totals"]["gpu_seconds"] == pytest.approx(sum(calls_per_tier) * 36.0)
    assert report["counterfactual"]["top_tier_only_cost_usd"] == pytest.approx(100 * hours * 2.49)
    assert report["counterfactual"]["savings_ratio"] == pytest.approx(
        1 - cost / (100 * hours * 2.49), abs=1e-6
    )
