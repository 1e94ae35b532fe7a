"""Operator commands: ``coe check-config``, ``coe routes`` and ``--help`` on every command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
GOOD = """
[ledger]
url = "postgresql://coe:hunter2@db:5432/coe"

[[endpoints]]
name = "small"
base_url = "http://127.0.0.1:9001/v1"
usd_per_mtok_in = 0.10
usd_per_mtok_out = 0.20

[[endpoints]]
name = "big"
base_url = "http://127.0.0.1:9002/v1"
gpu = "H100"
gpus = 2

[[endpoints]]
name = "spare"
base_url = "http://127.0.0.1:9003/v1"
api_key_env = "COE_TEST_SURELY_UNSET_KEY"

[routes.quiz]
task = "choice"
threshold = "2/3"
tiers = [["small"], ["big"]]
"""


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich folds long cells at 80 columns when not on a terminal; tests read whole values.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "coe.toml"
    path.write_text(GOOD, encoding="utf-8")
    return path


def test_check_config_prints_routes_tiers_thresholds_and_prices(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "quiz" in out and "A, B, C, D" in out
    assert "0.667" in out
    assert "$0.10 in / $0.20 out per Mtok" in out
    assert "2× H100 @ $2.49/GPU-h" in out
    assert f"{config} is valid: 3 endpoints, 1 routes, 0 tenants" in out


def test_check_config_never_prints_the_ledger_password(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["check-config", str(config)])

    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "postgresql://coe:***@db:5432/coe" in out


def test_check_config_warns_about_unused_endpoints_and_unset_key_variables(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["check-config", str(config)])

    out = capsys.readouterr().out
    assert "endpoint 'spare' is in no route's tiers" in out
    assert "COE_TEST_SURELY_UNSET_KEY is not set" in out


def test_check_config_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(EXAMPLE)]) == 0

    assert "sentiment" in capsys.readouterr().out


def test_check_config_exits_2_naming_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('threshold = "2/3"', 'threshold = "most"'), encoding="utf-8")

    assert cli.main(["check-config", str(bad)]) == 2

    captured = capsys.readouterr()
    assert f"{bad}: routes.quiz.threshold" in captured.err
    assert captured.out == ""


def test_check_config_exits_2_on_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", str(tmp_path / "nope.toml")]) == 2

    assert "no such file" in capsys.readouterr().err


def test_routes_lists_each_tier_with_its_endpoints(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["routes", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "quiz" in out and "small" in out and "big" in out


def test_routes_as_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["routes", "--config", str(config), "--format", "json"]) == 0

    [route] = json.loads(capsys.readouterr().out)
    assert route["route"] == "quiz"
    assert route["answers"] == ["A", "B", "C", "D"]
    assert route["threshold"] == pytest.approx(2 / 3)
    assert [[e["endpoint"] for e in tier] for tier in route["tiers"]] == [["small"], ["big"]]
    assert route["tiers"][0][0]["usd_per_mtok_in"] == 0.10
    assert route["tiers"][1][0]["gpu_hour_usd"] == 2.49


def test_routes_exits_2_on_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["routes", "--config", str(tmp_path / "nope.toml")]) == 2


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[
    tuple[str, ...]
]:
    """Every command and nested sub-command the parser knows, as argv prefixes."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(command_paths(sub, (*prefix, name)))
    return paths


def test_operator_commands_are_registered() -> None:
    names = {path[0] for path in command_paths(cli.build_parser())}

    assert {"check-config", "routes"} <= names
    assert {"gateway.commands.check_config", "gateway.commands.routes"} <= set(
        cli.COMMAND_MODULES
    )


@pytest.mark.parametrize("path", [(), *command_paths(cli.build_parser())], ids=" ".join)
def test_every_command_has_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*path, "--help"])

    assert exited.value.code == 0
    assert "usage: coe" in capsys.readouterr().out
