"""The audit's task group, as the app's lifespan runs it: shutdown drains audits in flight for at
most ``drain_s``, then cancels them; an audit finished in time is recorded."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest

from gateway.audit import Auditor
from gateway.config import Settings
from gateway.ledger import open_ledger
from gateway.metrics import Metrics
from gateway.plan import CoEOverrides, make_plan
from gateway.reload import ConfigHolder, Resources, build_generation
from providers.http import make_http_client
from tests.ledger_fixtures import call, fresh_query, outcome
from tests.upstream import Gate, Reply, UpstreamServer

MESSAGES = [{"role": "user", "content": "Sentiment?"}]


async def _audit_one(settings: Settings, drain_s: float, gate: Gate | None = None) -> float:
    """Serve-side hand-off of one tier-0 answer, then shut down (once its top-tier call holds at
    ``gate``, if given); the seconds the shutdown took."""
    async with open_ledger(settings.ledger) as ledger, make_http_client() as client:
        metrics = Metrics()
        holder = ConfigHolder(
            build_generation(settings, "v1", Resources(client, ledger, metrics))
        )
        route = settings.routes["sentiment"]
        plan = make_plan("sentiment", route, CoEOverrides(), {})
        served = outcome(calls=[call(name) for name in route.tiers[0]])
        await ledger.record(served)
        auditor = Auditor(ledger, metrics, holder, drain_s=drain_s)
        async with auditor.running():
            auditor.after_serving(plan, served, MESSAGES, None)
            if gate is not None:
                assert await anyio.to_thread.run_sync(gate.entered.wait, 10)
            started = time.monotonic()
        elapsed = time.monotonic() - started
        await holder.aclose()
        return elapsed


@pytest.mark.anyio
async def test_shutdown_cancels_an_audit_still_running_after_the_drain_bound(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> None:
    gate = Gate()  # never opened while the auditor runs
    upstreams["large"].script(default=Reply(content="positive", gate=gate))
    settings = make_settings(audit={"rate": 1.0})

    elapsed = await _audit_one(settings, drain_s=0.2, gate=gate)

    assert 0.2 <= elapsed < 5
    assert fresh_query(settings.ledger.url, "SELECT COUNT(*) FROM coe_audits") == [(0,)]


@pytest.mark.anyio
async def test_shutdown_waits_for_an_audit_that_finishes_within_the_bound(
    make_settings: Callable[..., Settings], upstreams: dict[str, UpstreamServer]
) -> None:
    settings = make_settings(audit={"rate": 1.0})

    await _audit_one(settings, drain_s=30)

    assert fresh_query(
        settings.ledger.url, "SELECT kind, outcome, billed_to FROM coe_audits"
    ) == [("sample", "agree", "admin")]
