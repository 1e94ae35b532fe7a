"""deploy/: the compose file, nginx and Prometheus configs and the gateway config agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GATEWAYS = ("gateway-1", "gateway-2")
VLLMS = ("vllm-small", "vllm-large")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(DEPLOY / "config.toml")


def test_the_expected_services_are_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"nginx", *GATEWAYS, "postgres", *VLLMS, "prometheus"}


@pytest.mark.parametrize("name", GATEWAYS)
def test_each_replica_is_built_from_the_dockerfile_with_the_config_mounted(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    gateway = services[name]

    context = (DEPLOY / gateway["build"]["context"]).resolve()
    assert (context / gateway["build"]["dockerfile"]) == ROOT / "Dockerfile"
    assert "./config.toml:/etc/coe/config.toml:ro" in gateway["volumes"]
    assert gateway["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "PGPASSWORD" in gateway["environment"]


def test_the_config_is_valid_and_may_bind_every_interface(settings: Settings) -> None:
    # The image runs `coe serve --host 0.0.0.0`, allowed only with tenants (or the opt-in).
    assert settings.server.host == "0.0.0.0"
    assert settings.tenants or settings.server.allow_unauthenticated_public_bind


def test_the_ledger_is_the_compose_postgres_without_a_password_in_the_file(
    settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    url = urlsplit(settings.ledger.url)
    postgres = services["postgres"]

    assert url.scheme == "postgresql" and url.hostname == "postgres"
    assert url.password is None
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    assert url.path.lstrip("/") == postgres["environment"]["POSTGRES_DB"]
    assert "healthcheck" in postgres


def test_every_vllm_endpoint_names_a_served_model_of_a_vllm_service(
    settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    served = {}
    for name in VLLMS:
        command = services[name]["command"]
        served[name] = command[command.index("--served-model-name") + 1]

    for endpoint in settings.endpoints:
        host = urlsplit(endpoint.base_url).hostname
        assert host in served, f"{endpoint.name}: {host} is not a vLLM service"
        assert endpoint.model == served[host]
    used = {urlsplit(e.base_url).hostname for e in settings.endpoints}
    assert used == set(VLLMS)


def test_each_vllm_server_is_the_official_image_on_its_own_gpu(
    services: dict[str, dict[str, Any]]
) -> None:
    gpus = []
    for name in VLLMS:
        service = services[name]
        assert service["image"].startswith("vllm/vllm-openai:")
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
        gpus.extend(device["device_ids"])
    assert len(set(gpus)) == len(VLLMS)


def test_nginx_balances_over_every_replica(services: dict[str, dict[str, Any]]) -> None:
    nginx = services["nginx"]
    conf = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, re.DOTALL)

    assert upstream is not None
    assert re.findall(r"server\s+([\w-]+):8000", upstream.group(2)) == list(GATEWAYS)
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(GATEWAYS)


def test_prometheus_scrapes_every_replica(services: dict[str, dict[str, Any]]) -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = scrape["scrape_configs"]

    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"{g}:8000" for g in GATEWAYS]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"][
        "volumes"
    ]


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")

    assert "${POSTGRES_PASSWORD:?" in text
    for name, service in compose["services"].items():
        for key, value in dict(service.get("environment", {})).items():
            if any(word in key for word in ("PASSWORD", "TOKEN", "KEY")):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
