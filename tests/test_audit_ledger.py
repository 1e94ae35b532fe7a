"""The audit's ledger rows (coe_audits) and sums, on SQLite and PostgreSQL: what H2's θ controller
and the audit report read, and audit spend kept out of serving totals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import LedgerConfig
from gateway.ledger import AuditRecord, Window, open_ledger
from policies.audit import PatternEvidence, VotePattern
from tests.ledger_fixtures import BACKENDS, MOMENT, call, ledger_url_for, outcome


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


def _row(
    request_id: str,
    outcome_: str,
    *,
    kind: str = "sample",
    votes: int = 3,
    tenant: str = "acme",
    minutes: int = 0,
    cost_usd: float = 0.0,
    threshold: float = 2 / 3,
) -> AuditRecord:
    return AuditRecord(
        request_id=request_id,
        kind=kind,  # type: ignore[arg-type]
        tier=0,
        route="sentiment",
        tenant=tenant,
        created_at=MOMENT + timedelta(minutes=minutes),
        votes=votes,
        size=3,
        threshold=threshold,
        served_answer="positive",
        top_answer=None if outcome_ == "top_failed" else "positive",
        outcome=outcome_,  # type: ignore[arg-type]
        cost_usd=cost_usd,
    )


@pytest.mark.anyio
async def test_evidence_counts_each_pattern_and_kind_without_top_tier_failures(
    ledger_url: str,
) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record_audit(
            [
                _row("r1", "agree"),
                _row("r2", "disagree"),
                _row("r3", "top_failed"),
                _row("r4", "agree", votes=2),
                _row("r5", "agree", kind="census", votes=2),
            ]
        )
        counts = await ledger.audit_counts("sentiment", Window())

    assert list(counts.evidence) == [
        PatternEvidence(VotePattern(0, 2, 3), "census", 1, 1),
        PatternEvidence(VotePattern(0, 2, 3), "sample", 1, 1),
        PatternEvidence(VotePattern(0, 3, 3), "sample", 2, 1),
    ]


@pytest.mark.anyio
async def test_evidence_is_windowed_by_the_served_time_and_tenant(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record_audit(
            [
                _row("early", "agree"),
                _row("late", "disagree", minutes=10),
                _row("other", "disagree", minutes=10, tenant="beta"),
            ]
        )
        since = MOMENT + timedelta(minutes=5)
        late = await ledger.audit_counts("sentiment", Window("acme", since=since))
        early = await ledger.audit_counts("sentiment", Window(until=since))

    assert late.evidence == (PatternEvidence(VotePattern(0, 3, 3), "sample", 1, 0),)
    assert early.evidence == (PatternEvidence(VotePattern(0, 3, 3), "sample", 1, 1),)


@pytest.mark.anyio
async def test_controller_evidence_is_each_strata_latest_rows_before_until_oldest_first(
    ledger_url: str,
) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record_audit(
            [
                *(_row(f"s{m}", "agree" if m >= 2 else "disagree", minutes=m) for m in range(4)),
                _row("failed", "top_failed", minutes=4),
                _row("census", "disagree", kind="census", votes=2, minutes=1),
                _row("strict", "disagree", threshold=1.0, minutes=0),
                _row("after", "disagree", minutes=9),
            ]
        )
        rows = await ledger.recent_audits(
            "sentiment", until=MOMENT + timedelta(minutes=9), per_stratum=2
        )

    # 3/3 samples at θ=2/3: the latest two (s2, s3); the other strata whole; "after" is too late.
    assert [(r.pattern.text, r.kind, r.agreed, r.threshold) for r in rows] == [
        ("3/3", "sample", False, 1.0),
        ("2/3", "census", False, 2 / 3),
        ("3/3", "sample", True, 2 / 3),
        ("3/3", "sample", True, 2 / 3),
    ]


@pytest.mark.anyio
async def test_audit_requests_stay_out_of_serving_totals(ledger_url: str) -> None:
    served = outcome(calls=[call("a", cost_usd=0.01)])
    audit = outcome(tenant="admin", tier=1, calls=[call("large", tier=1, cost_usd=0.5)])
    audit.request_id = served.request_id + ".audit"
    audit.purpose = "audit"
    audit.parent_request_id = served.request_id
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(served)
        await ledger.record_audit(
            [_row(served.request_id, "agree", cost_usd=0.5)], outcome=audit
        )
        summary = await ledger.summarize(Window(), "route")
        counts = await ledger.audit_counts("sentiment", Window())
        spend = await ledger.route_spend()

    assert summary.totals.requests == 1
    assert summary.totals.calls == 1
    assert summary.totals.cost_usd == pytest.approx(0.01)
    assert (summary.audit.requests, summary.audit.calls) == (1, 1)
    assert summary.audit.cost_usd == pytest.approx(0.5)
    assert counts.requests == 1
    assert counts.cost_usd == pytest.approx(0.5)
    assert spend.keys() == {"sentiment"}
    assert spend["sentiment"] == pytest.approx((0.01, 0.5))
