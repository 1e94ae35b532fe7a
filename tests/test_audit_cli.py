"""``coe audit`` (the audit report from the ledger, as a table or JSON) and the audit spend line
of ``coe report``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from gateway.cli import main
from gateway.config import LedgerConfig
from gateway.ledger import AuditRecord, open_ledger
from policies.audit import clopper_pearson
from tests.ledger_fixtures import MOMENT, call, outcome

CONFIG = """
[ledger]
url = "sqlite:///{ledger}"

[[endpoints]]
name = "small"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "small"

[[endpoints]]
name = "large"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "large"

[routes.sentiment]
labels = ["positive", "negative"]
tiers = [["small"], ["large"]]

[routes.sentiment.audit]
rate = 0.5
"""


def _fill(ledger: Path) -> None:
    """Four requests answered at tier 0 (pattern 1/1); three audited: two agree, one not."""

    async def record() -> None:
        async with open_ledger(LedgerConfig(url=f"sqlite:///{ledger}")) as opened:
            for n in range(4):
                served = outcome(calls=[call("small", cost_usd=0.01)], request_id=f"r{n}")
                await opened.record(served)
                if n == 3:
                    continue
                audit = outcome(tenant="admin", calls=[call("large", tier=1, cost_usd=0.5)])
                audit.request_id, audit.purpose = f"r{n}.audit", "audit"
                row = AuditRecord(
                    request_id=f"r{n}", kind="sample", tier=0, route="sentiment", tenant="acme",
                    created_at=MOMENT, votes=1, size=1, threshold=1.0, served_answer="positive",
                    top_answer="negative" if n == 2 else "positive",
                    outcome="disagree" if n == 2 else "agree", cost_usd=0.5, billed_to="admin",
                    audit_request_id=audit.request_id,
                )
                await opened.record_audit([row], outcome=audit)

    anyio.run(record)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    ledger = tmp_path / "coe.db"
    _fill(ledger)
    path = tmp_path / "coe.toml"
    path.write_text(CONFIG.format(ledger=ledger), encoding="utf-8")
    return path


def test_json_is_the_audit_report_of_the_configs_audited_route(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["route"] == "sentiment"
    assert report["audit_cost_usd"] == pytest.approx(1.5)
    (row,) = report["patterns"]
    assert (row["tier"], row["votes"], row["kind"], row["audited"], row["agreed"]) == (
        0, "1/1", "sample", 3, 2,
    )
    assert row["ci95"] == pytest.approx(list(clopper_pearson(2, 3)), abs=1e-6)
    assert row["traffic_share"] == 1.0


def test_the_table_lists_each_pattern(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich's width when not on a terminal
    assert main(["audit", "--config", str(config), "--route", "sentiment"]) == 0
    out = capsys.readouterr().out

    assert "Audit of route sentiment" in out
    assert "1/1" in out and "sample" in out and "66.67%" in out


def test_a_window_without_audits_has_no_patterns(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["audit", "--config", str(config), "--json", "--since", "2030-01-01"])

    assert json.loads(capsys.readouterr().out)["patterns"] == []


def test_coe_report_shows_audit_spend_apart_from_serving(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    main(["report", "--config", str(config), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    main(["report", "--config", str(config)])
    table = capsys.readouterr().out

    assert report["totals"]["requests"] == 4
    assert report["totals"]["cost_usd"] == pytest.approx(0.04)
    assert report["audit"] == {"requests": 3, "calls": 3, "cost_usd": pytest.approx(1.5)}
    assert "serving cost (USD)" in table
    assert "audit cost (USD)" in table and "1.500000 (3 audits)" in table
