"""Configuration: the documented TOML loads; every mistake is named before the gateway starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings, parse_settings
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def minimal(**route: Any) -> dict[str, Any]:
    return {
        "endpoints": [
            {"name": "a", "base_url": "http://127.0.0.1:9001/v1", "model": "m"},
            {"name": "b", "base_url": "http://127.0.0.1:9002/v1", "model": "m"},
        ],
        "routes": {"r": {"labels": ["yes", "no"], "tiers": [["a"], ["b"]], **route}},
    }


def problem(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_settings(raw, source="gw.toml")
    return raised.value.message


def test_example_config_loads() -> None:
    settings = load_settings(ROOT / "config.example.toml")

    assert settings.routes["sentiment"].tiers[0] == ("small-a", "small-b", "small-c")
    assert settings.pricing.gpu_hour_usd["H100"] == 2.49


def test_fraction_threshold_is_accepted() -> None:
    assert parse_settings(minimal(threshold="2/3")).routes["r"].threshold == pytest.approx(2 / 3)


def test_error_names_file_key_path_and_problem() -> None:
    raw = minimal()
    raw["endpoints"][1]["timeout_s"] = -1

    message = problem(raw)

    assert message.startswith("gw.toml: endpoints[1].timeout_s:")
    assert "greater than 0" in message


@pytest.mark.parametrize("theta", [0, 1.5, -0.1, "3/2", "most"])
def test_threshold_outside_zero_one_is_refused(theta: Any) -> None:
    assert "routes.r.threshold" in problem(minimal(threshold=theta))


def test_unknown_endpoint_in_a_route_is_refused() -> None:
    assert "unknown endpoint 'c'" in problem(minimal(tiers=[["a", "c"]]))


def test_empty_tier_is_refused() -> None:
    assert "tier 1 is empty" in problem(minimal(tiers=[["a"], []]))


def test_no_tiers_is_refused() -> None:
    assert "at least one tier" in problem(minimal(tiers=[]))


def test_duplicate_endpoint_names_are_refused() -> None:
    raw = minimal()
    raw["endpoints"][1]["name"] = "a"

    assert "duplicate endpoint names: a" in problem(raw)


def test_unknown_key_is_refused() -> None:
    raw = minimal()
    raw["endpoints"][0]["temprature"] = 0

    assert "endpoints[0].temprature" in problem(raw)


def test_classify_route_needs_labels() -> None:
    assert "needs labels" in problem(minimal(labels=[]))


def test_public_bind_without_tenants_is_refused() -> None:
    raw = {**minimal(), "server": {"host": "0.0.0.0"}}

    assert "not loopback" in problem(raw)


def test_gpu_without_a_price_is_refused() -> None:
    raw = minimal()
    raw["endpoints"][0]["gpu"] = "TPUv9"

    assert "no price" in problem(raw)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nport = 1")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_tenant_name_admin_is_reserved() -> None:
    raw = {**minimal(), "tenants": [{"name": "admin"}]}

    assert "reserved" in problem(raw)
