"""``coe report``: the ledger named in the config, as table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import anyio
import pytest

from gateway.commands import report as report_command
from gateway.config import LedgerConfig
from gateway.errors import ConfigError
from gateway.ledger import open_ledger
from tests.ledger_fixtures import call, outcome


def _config(tmp_path: Path, ledger: Path) -> Path:
    config = tmp_path / "coe.toml"
    config.write_text(f'[ledger]\nurl = "sqlite:///{ledger}"\n', encoding="utf-8")
    return config


def _fill(ledger: Path) -> None:
    async def record() -> None:
        async with open_ledger(LedgerConfig(url=f"sqlite:///{ledger}")) as opened:
            await opened.record(
                outcome(tenant="acme", calls=[call("small-a", cost_usd=0.25)], tags=("x",))
            )
            await opened.record(outcome(tenant="beta", calls=[call("large", cost_usd=1.5)]))

    anyio.run(record)


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="coe")
    report_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    result: int = args.func(args)
    return result


@pytest.fixture
def config(tmp_path: Path) -> Path:
    ledger = tmp_path / "coe.db"
    _fill(ledger)
    return _config(tmp_path, ledger)


def test_json_is_the_contract_report_of_every_tenant(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("--config", str(config), "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tenant"] is None
    assert report["totals"]["requests"] == 2
    assert report["totals"]["cost_usd"] == pytest.approx(1.75)


def test_tenant_and_grouping_options(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run("--config", str(config), "--format", "json", "--tenant", "acme", "--group-by", "tag")
    report = json.loads(capsys.readouterr().out)
    assert report["tenant"] == "acme"
    assert [g["key"] for g in report["groups"]] == ["x"]


def test_window_options(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run("--config", str(config), "--format", "json", "--since", "2025-03-15")
    assert json.loads(capsys.readouterr().out)["totals"]["requests"] == 0


def test_csv_has_one_row_per_group(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run("--config", str(config), "--format", "csv", "--group-by", "endpoint")
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        ["endpoint", "requests", "calls", "cost_usd"],
        ["large", "1", "1", "1.5000000000"],
        ["small-a", "1", "1", "0.2500000000"],
    ]


def test_table_shows_totals_and_groups(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run("--config", str(config))
    out = capsys.readouterr().out
    assert "all tenants" in out
    assert "1.750000" in out
    assert "sentiment" in out


def test_a_missing_ledger_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigError, match="no ledger"):
        _run("--config", str(_config(tmp_path, missing)))
    assert not missing.exists()
