"""gateway.audit's θ controller on a real ledger (SQLite and PostgreSQL): the θ in force follows
the audit rows, read up to one interval before each wall-clock tick; reloads and the metric."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.audit import ThresholdController, ThresholdsInForce
from gateway.config import LedgerConfig, Settings, parse_settings
from gateway.ledger import AuditRecord, BatchingLedger, open_ledger
from gateway.metrics import Metrics
from gateway.reload import ConfigHolder, Resources, build_generation
from tests.ledger_fixtures import BACKENDS, ledger_url_for

pytestmark = pytest.mark.anyio

INTERVAL = 10.0
T0 = 1_800_000_000.0  # a tick: a multiple of INTERVAL
MIN = 150


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


def settings(**route: Any) -> Settings:
    return parse_settings({
        "endpoints": [
            {"name": n, "base_url": "http://127.0.0.1:9/v1", "model": n} for n in "abct"
        ],
        "routes": {"r": {
            "labels": ["positive", "negative"],
            "tiers": [["a", "b", "c"], ["t"]],
            "target_agreement": 0.98, "confidence": 0.95, "min_samples": MIN,
            "thresholds": ["2/3", 1], "refresh_interval_s": INTERVAL, "evidence_window": 500,
            "audit": {"rate": 1.0},
            **route,
        }},
    })


@dataclass
class Rig:
    ledger: BatchingLedger
    metrics: Metrics
    config: ConfigHolder
    in_force: ThresholdsInForce
    controller: ThresholdController
    written: int = 0

    async def audits(
        self, votes: int, n: int, *, disagree: int = 0, kind: str = "sample",
        served: float = 1.0, at: float = T0 - 2 * INTERVAL,
    ) -> None:
        """``n`` audited requests of one pattern served at ``at``, the first ``disagree``
        disagreeing."""
        rows = []
        for i in range(n):
            self.written += 1
            rows.append(AuditRecord(
                request_id=f"req-{self.written:06d}", kind=kind, tier=0, route="r",  # type: ignore[arg-type]
                tenant="acme", created_at=datetime.fromtimestamp(at, UTC), votes=votes, size=3,
                threshold=served, served_answer="positive",
                top_answer="negative" if i < disagree else "positive",
                outcome="disagree" if i < disagree else "agree",
            ))
        await self.ledger.record_audit(rows)

    async def at_one(self, *, disagree: int = 0, n: int = 200, at: float = T0 - 2 * INTERVAL
                     ) -> None:
        """Served at θ = 1: unanimous tiers sampled, 2/3 tiers escalated (their census)."""
        await self.audits(3, n, at=at)
        await self.audits(2, n, disagree=disagree, kind="census", at=at)

    def theta(self) -> float | None:
        return self.in_force.get("r", self.config.current.settings.routes["r"])

    def gauge(self) -> float | None:
        return self.metrics.registry.get_sample_value("coe_threshold_in_force", {"route": "r"})


@asynccontextmanager
async def rig(ledger_url: str, **route: Any) -> AsyncIterator[Rig]:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger, httpx.AsyncClient() as client:
        metrics = Metrics()
        config = ConfigHolder(build_generation(
            settings(**route), "v1", Resources(client, ledger, metrics)
        ))
        in_force = ThresholdsInForce()
        controller = ThresholdController(ledger, metrics, config, in_force)
        yield Rig(ledger, metrics, config, in_force, controller)


async def test_the_strictest_is_in_force_until_the_evidence_is_in(ledger_url: str) -> None:
    async with rig(ledger_url) as r:
        assert r.theta() == 1.0  # before any choice
        await r.at_one(n=MIN - 1)
        choice = (await r.controller.refresh(T0))["r"]
        assert choice.fallback and r.theta() == 1.0 and r.gauge() == 1.0


async def test_theta_loosens_then_tightens_with_the_rows(
    ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig(ledger_url) as r:
        await r.at_one()
        with caplog.at_level(logging.INFO, logger="coe.threshold"):
            await r.controller.refresh(T0)
        assert r.theta() == 2 / 3 and r.gauge() == pytest.approx(2 / 3)
        assert "route r now serves with θ=2/3 (was none chosen)" in caplog.text

        # Served at 2/3 since: its own samples agree 90 % of the time.
        await r.audits(2, 200, disagree=20, served=2 / 3, at=T0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="coe.threshold"):
            await r.controller.refresh(T0 + 2 * INTERVAL)
        assert r.theta() == 1.0 and r.gauge() == 1.0
        assert "now serves with θ=1 (was 2/3)" in caplog.text
        assert "lower bound below 0.98 for 2/3@0 sample" in caplog.text


async def test_a_choice_reads_rows_served_one_interval_before_its_tick(ledger_url: str) -> None:
    async with rig(ledger_url) as r:
        await r.at_one(at=T0 - INTERVAL / 2)
        # Any moment of the interval [T0, T0 + INTERVAL) is the tick T0: rows up to T0 − INTERVAL.
        await r.controller.refresh(T0 + INTERVAL * 0.99)
        assert r.theta() == 1.0
        await r.controller.refresh(T0 + INTERVAL)
        assert r.theta() == 2 / 3


async def test_two_controllers_on_one_ledger_choose_alike_at_any_moment_of_a_tick(
    ledger_url: str,
) -> None:
    async with rig(ledger_url) as first, rig(ledger_url) as second:
        await first.at_one()
        # Rows of the interval being read differ in time; the choice does not.
        await first.audits(2, 300, disagree=30, served=2 / 3, at=T0 + INTERVAL / 2)
        await first.controller.refresh(T0 + 0.1)
        await second.controller.refresh(T0 + INTERVAL - 0.1)
        assert first.theta() == second.theta() == 2 / 3


async def test_a_reloaded_route_keeps_its_theta_only_while_it_is_allowed(ledger_url: str) -> None:
    async with rig(ledger_url) as r:
        await r.at_one()
        await r.controller.refresh(T0)
        route = r.config.current.settings.routes["r"]
        assert r.in_force.get("r", route) == 2 / 3
        narrower = route.model_copy(update={"thresholds": (0.8, 1.0)})
        assert r.in_force.get("r", narrower) == 1.0
        untargeted = route.model_copy(update={"target_agreement": None})
        assert r.in_force.get("r", untargeted) is None


async def test_running_chooses_before_serving_then_at_each_tick(ledger_url: str) -> None:
    async with rig(ledger_url, refresh_interval_s=0.05) as r:
        await r.at_one(at=0.0)
        async with r.controller.running():
            assert r.theta() == 2 / 3  # chosen before the block is entered
            await r.audits(2, 200, disagree=20, served=2 / 3, at=1.0)
            with anyio.fail_after(10):
                # The controller's own task re-reads the ledger at its ticks; nothing to await.
                while r.theta() != 1.0:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        made = r.metrics.registry.get_sample_value("coe_threshold_choices_total", {"route": "r"})
        assert made is not None and made >= 2
