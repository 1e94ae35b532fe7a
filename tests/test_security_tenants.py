"""Keys and tenants: digests compared in constant time, and no tenant reads, bills or spends
another's. Everything goes through the real app over HTTP, with the real ledger."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings, parse_settings
from gateway.errors import Unauthorized
from gateway.tenants import KeyRing, new_key
from tests.conftest import cascade_config
from tests.gateway_server import GatewayServer
from tests.ledger_fixtures import BACKENDS, fresh_query, ledger_url_for
from tests.upstream import UpstreamServer

ACME_KEY, ACME_DIGEST = new_key()
BETA_KEY, BETA_DIGEST = new_key()
ADMIN_KEY, ADMIN_DIGEST = new_key()
BODY = {"model": "sentiment", "messages": [{"role": "user", "content": "A fine film."}]}
# θ = 1, three agreeing tier-0 calls of 10 + 2 tokens at $0.10 / $0.20 per Mtok.
REQUEST_COST = 3 * (10 * 0.1 + 2 * 0.2) / 1e6
# What a request reserves before dispatch: "A fine film." is ~3 prompt tokens, the route's
# max_tokens 16 out, on every endpoint of both tiers (three at $0.10/$0.20, one at $2/$8).
WORST_CASE = (3 * (3 * 0.1 + 16 * 0.2) + (3 * 2.0 + 16 * 8.0)) / 1e6


def tenants_config(
    upstreams: dict[str, UpstreamServer], ledger_url: str, acme_budget: float | None = None
) -> Settings:
    raw = cascade_config(upstreams, Path("unused.db"), threshold=1)
    raw["ledger"] = {"url": ledger_url}
    raw["tenants"] = [
        {"name": "acme", "api_key_sha256": [ACME_DIGEST], "budget_usd": acme_budget},
        {"name": "beta", "api_key_sha256": [BETA_DIGEST]},
    ]
    if acme_budget is None:
        del raw["tenants"][0]["budget_usd"]
    raw["admin"] = {"api_key_sha256": [ADMIN_DIGEST]}
    return parse_settings(raw)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


@pytest.fixture
def serve(
    upstreams: dict[str, UpstreamServer], ledger_url: str
) -> Iterator[Callable[..., httpx.Client]]:
    opened: list[tuple[GatewayServer, httpx.Client]] = []

    def start(**kwargs: Any) -> httpx.Client:
        server = GatewayServer(tenants_config(upstreams, ledger_url, **kwargs)).__enter__()
        client = httpx.Client(base_url=server.url, timeout=30)
        opened.append((server, client))
        return client

    yield start
    for server, client in opened:
        client.close()
        server.__exit__(None, None, None)


def complete(client: httpx.Client, key: str, **kwargs: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json=kwargs.pop("json", BODY),
                       headers={**auth(key), **kwargs.pop("headers", {})}, **kwargs)


def costs(client: httpx.Client, key: str, **params: str) -> dict[str, Any]:
    response = client.get("/v1/coe/costs", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_keyring_holds_digests_never_keys() -> None:
    settings = parse_settings(
        {"tenants": [{"name": "acme", "api_key_sha256": [ACME_DIGEST]}],
         "admin": {"api_key_sha256": [ADMIN_DIGEST]}}
    )
    ring = KeyRing.from_settings(settings)

    held = repr([getattr(ring, slot) for slot in vars(ring)])
    assert ACME_KEY not in held and ADMIN_KEY not in held
    assert ACME_DIGEST in held


@pytest.mark.parametrize("presented", ["first", "last", "admin", "unknown", "huge"])
def test_every_digest_is_compared_whichever_key_is_presented(
    presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [new_key() for _ in range(5)]
    ring = KeyRing(
        {digest: f"t{i}" for i, (_, digest) in enumerate(keys)}, frozenset({ADMIN_DIGEST})
    )
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr("gateway.tenants.hmac.compare_digest", counting)
    key = {
        "first": keys[0][0], "last": keys[-1][0], "admin": ADMIN_KEY,
        "unknown": "sk-coe-nobody", "huge": "k" * 100_000,
    }[presented]

    with contextlib.suppress(Unauthorized):
        ring.authenticate(f"Bearer {key}")

    # No early exit, and both sides are always a 64-character digest: the time cannot say which
    # entry matched or how long the key was.
    assert compared == [(64, 64)] * 6


def test_a_presented_key_is_hashed_before_any_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def recording(a: str, b: str) -> bool:
        seen.append(b)
        return a == b

    monkeypatch.setattr("gateway.tenants.hmac.compare_digest", recording)
    ring = KeyRing({ACME_DIGEST: "acme"}, frozenset())

    assert ring.authenticate(f"Bearer {ACME_KEY}").tenant == "acme"
    assert seen == [hashlib.sha256(ACME_KEY.encode()).hexdigest()]


def test_a_tenant_sees_only_its_own_requests_and_tags(serve: Callable[..., httpx.Client]) -> None:
    client = serve()
    for _ in range(3):
        assert complete(client, ACME_KEY, headers={"x-coe-tags": "acme-secret-project"}).is_success
    assert complete(client, BETA_KEY).is_success

    beta = costs(client, BETA_KEY, group_by="tag")
    acme = costs(client, ACME_KEY)

    assert beta["tenant"] == "beta"
    assert beta["totals"]["requests"] == 1
    assert [g["key"] for g in beta["groups"]] == [""]
    assert acme["totals"]["requests"] == 3
    assert costs(client, ADMIN_KEY)["totals"]["requests"] == 4


@pytest.mark.parametrize(
    "spoof",
    [
        {"headers": {"x-coe-tenant": "beta", "x-tenant": "beta"}},
        {"json": {**BODY, "user": "beta", "tenant": "beta"}},
        {"json": {**BODY, "metadata": {"tenant": "beta"}}},
    ],
)
def test_a_tenant_cannot_bill_another(
    serve: Callable[..., httpx.Client], ledger_url: str, spoof: dict[str, Any]
) -> None:
    client = serve()

    assert complete(client, ACME_KEY, **spoof).status_code == 200

    assert fresh_query(ledger_url, "SELECT tenant FROM coe_requests") == [("acme",)]
    assert costs(client, BETA_KEY)["totals"]["requests"] == 0


def test_the_coe_extension_cannot_name_a_tenant(serve: Callable[..., httpx.Client]) -> None:
    response = complete(serve(), ACME_KEY, json={**BODY, "coe": {"tenant": "beta"}})

    assert response.status_code == 400


def test_one_tenants_spending_does_not_use_anothers_budget(
    serve: Callable[..., httpx.Client],
) -> None:
    client = serve(acme_budget=WORST_CASE + REQUEST_COST * 1.5)
    for _ in range(5):
        assert complete(client, BETA_KEY).status_code == 200

    statuses = [complete(client, ACME_KEY).status_code for _ in range(3)]

    # A request starts only if spent + its worst case fits: acme's second starts at 1 request
    # spent, its third (2 spent) does not; beta's spending never counted.
    assert statuses == [200, 200, 429]
    assert complete(client, BETA_KEY).status_code == 200


def test_the_admin_surface_needs_an_admin_key(serve: Callable[..., httpx.Client]) -> None:
    client = serve()

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(ACME_KEY)).status_code == 403
    assert client.get("/metrics", headers=auth(ADMIN_KEY)).status_code == 200
    assert client.get("/v1/coe/costs", params={"tenant": "beta"},
                      headers=auth(ACME_KEY)).status_code == 403
    assert client.get("/v1/coe/costs", params={"tenant": "beta"},
                      headers=auth(ADMIN_KEY)).status_code == 200


def test_a_reused_request_id_is_billed_to_its_own_tenant_and_leaves_the_first_alone(
    serve: Callable[..., httpx.Client], ledger_url: str
) -> None:
    client = serve()
    first = complete(client, ACME_KEY, headers={"x-request-id": "shared-1"})

    second = complete(client, BETA_KEY, headers={"x-request-id": "shared-1"})

    assert (first.status_code, second.status_code) == (200, 200)
    rows = fresh_query(
        ledger_url, "SELECT request_id, tenant, cost_usd FROM coe_requests ORDER BY created_at"
    )
    assert [(r[0].split(".")[0], r[1]) for r in rows] == [
        ("shared-1", "acme"),
        ("shared-1", "beta"),
    ]
    assert rows[0][0] == "shared-1" and rows[1][0] != "shared-1"
    assert second.json()["id"] == f"chatcmpl-{rows[1][0]}"
    assert costs(client, BETA_KEY)["totals"]["cost_usd"] == pytest.approx(REQUEST_COST)
    assert costs(client, ACME_KEY)["totals"]["cost_usd"] == pytest.approx(REQUEST_COST)
