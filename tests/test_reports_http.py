"""``GET /v1/coe/costs``: each key reads its own tenant's numbers, an admin key anyone's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.api.costs import router
from gateway.api.state import STATE_KEY, AppState
from gateway.billing import Biller
from gateway.budgets import BudgetGuard
from gateway.config import Settings, parse_settings
from gateway.errors import CoEError
from gateway.ledger import open_ledger
from gateway.metrics import Metrics
from gateway.tenants import KeyRing, new_key
from tests.ledger_fixtures import BACKENDS, call, ledger_url_for, outcome

ACME_KEY, ACME_DIGEST = new_key()
BETA_KEY, BETA_DIGEST = new_key()
ADMIN_KEY, ADMIN_DIGEST = new_key()


def _settings(url: str, *, tenants: bool = True) -> Settings:
    raw: dict[str, Any] = {"ledger": {"url": url}, "admin": {"api_key_sha256": [ADMIN_DIGEST]}}
    if tenants:
        raw["tenants"] = [
            {"name": "acme", "api_key_sha256": [ACME_DIGEST]},
            {"name": "beta", "api_key_sha256": [BETA_DIGEST]},
        ]
    return parse_settings(raw)


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


async def _coe_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CoEError)
    body = {"error": {"message": exc.message, "type": exc.error_type, "code": exc.code}}
    return Response(orjson.dumps(body), status_code=exc.status_code)


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with open_ledger(settings.ledger) as ledger:
        await ledger.record(outcome(tenant="acme", calls=[call("a", cost_usd=0.25)]))
        for _ in range(3):
            await ledger.record(outcome(tenant="beta", calls=[call("b", cost_usd=1.0)]))
        await ledger.record(outcome(tenant="default", calls=[call("c", cost_usd=0.5)]))
        state = AppState(
            settings=settings,
            engine=cast("Any", None),
            ledger=ledger,
            keyring=KeyRing.from_settings(settings),
            biller=Biller(settings),
            budgets=BudgetGuard(settings, ledger),
            metrics=Metrics(),
        )
        app = FastAPI()
        app.include_router(router)
        app.add_exception_handler(CoEError, _coe_error)

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            # What the app's lifespan provides: its state in every request's scope.
            scope["state"] = {STATE_KEY: state}
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def client(ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(_settings(ledger_url)):
        yield client


@pytest.fixture
async def open_client(ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(_settings(ledger_url, tenants=False)):
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.anyio
async def test_a_tenant_reads_its_own_costs(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/coe/costs", headers=_auth(ACME_KEY))
    assert response.status_code == 200
    report = response.json()
    assert report["tenant"] == "acme"
    assert report["totals"]["requests"] == 1
    assert report["totals"]["cost_usd"] == pytest.approx(0.25)


@pytest.mark.anyio
async def test_a_tenant_may_name_itself(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/coe/costs?tenant=beta", headers=_auth(BETA_KEY))
    assert response.status_code == 200
    assert response.json()["totals"]["requests"] == 3


@pytest.mark.anyio
async def test_a_tenant_asking_for_another_is_forbidden(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/coe/costs?tenant=beta", headers=_auth(ACME_KEY))
    assert response.status_code == 403
    assert set(response.json()) == {"error"}


@pytest.mark.anyio
async def test_a_repeated_tenant_parameter_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/coe/costs?tenant=acme&tenant=beta", headers=_auth(ACME_KEY))
    assert response.status_code == 400


@pytest.mark.anyio
async def test_no_key_or_a_bad_key_is_unauthorized(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/coe/costs")).status_code == 401
    response = await client.get("/v1/coe/costs", headers=_auth("sk-coe-wrong"))
    assert response.status_code == 401


@pytest.mark.anyio
async def test_an_admin_sees_every_tenant_or_the_one_named(client: httpx.AsyncClient) -> None:
    everyone = (await client.get("/v1/coe/costs", headers=_auth(ADMIN_KEY))).json()
    assert everyone["tenant"] is None
    assert everyone["totals"]["requests"] == 5
    beta = (await client.get("/v1/coe/costs?tenant=beta", headers=_auth(ADMIN_KEY))).json()
    assert (beta["tenant"], beta["totals"]["requests"]) == ("beta", 3)


@pytest.mark.anyio
async def test_query_parameters_are_applied(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/coe/costs?group_by=endpoint&since=2025-03-14&until=2025-03-15T00:00:00Z",
        headers=_auth(BETA_KEY),
    )
    report = response.json()
    assert report["since"] == "2025-03-14T00:00:00Z"
    assert report["groups"] == [{"key": "b", "requests": 3, "calls": 3, "cost_usd": 3.0}]
    later = await client.get("/v1/coe/costs?since=2025-03-15", headers=_auth(BETA_KEY))
    assert later.json()["totals"]["requests"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["since=yesterday", "until=2025-13-01", "group_by=model"])
async def test_bad_parameters_are_bad_requests(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/v1/coe/costs?{query}", headers=_auth(ACME_KEY))
    assert response.status_code == 400


@pytest.mark.anyio
async def test_without_tenants_everyone_reads_the_default_tenant(
    open_client: httpx.AsyncClient,
) -> None:
    response = await open_client.get("/v1/coe/costs")
    assert (response.json()["tenant"], response.json()["totals"]["requests"]) == ("default", 1)
    forbidden = await open_client.get("/v1/coe/costs?tenant=beta")
    assert forbidden.status_code == 403
