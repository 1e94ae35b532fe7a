"""The live audit over real HTTP: the gateway under uvicorn, scripted upstreams on loopback, the
official openai SDK as client. The top tier ("large") is held on a Gate where a test needs an
audit in flight; stopping the gateway drains its audits, so the ledger is read after that."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config import Settings, parse_settings
from gateway.tenants import new_key
from policies.audit import clopper_pearson
from tests.conftest import cascade_config
from tests.gateway_server import GatewayServer
from tests.ledger_fixtures import fresh_query
from tests.upstream import Gate, Reply, UpstreamServer

REVIEW = [{"role": "user", "content": "Review: a delight from start to finish. Sentiment?"}]
ACME_KEY, ACME_DIGEST = new_key()
ADMIN_KEY, ADMIN_DIGEST = new_key()


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def settings_for(
    upstreams: dict[str, UpstreamServer], tmp_path: Path
) -> Callable[..., Settings]:
    def build(
        audit: dict[str, Any] | None = None, copies: tuple[str, ...] = (), **route: Any
    ) -> Settings:
        """The sentiment route (and ``copies`` of it under other names)."""
        raw = cascade_config(upstreams, tmp_path / "ledger.db", **route)
        if audit is not None:
            # The large model's audit costs ~9 tier-0 requests: no pause unless a test sets one.
            raw["routes"]["sentiment"]["audit"] = {
                "bill_to": "operator", "max_share_of_spend": 1000.0, **audit
            }
        raw["admin"] = {"api_key_sha256": [ADMIN_DIGEST]}  # reads /metrics with tenants
        if "tenants" in route:
            raw["tenants"] = raw["routes"]["sentiment"].pop("tenants")
        for name in copies:
            raw["routes"][name] = dict(raw["routes"]["sentiment"])
        return parse_settings(raw)

    return build


@pytest.fixture
def serve(settings_for: Callable[..., Settings]) -> Iterator[Callable[..., GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(**kwargs: Any) -> GatewayServer:
        server = GatewayServer(settings_for(**kwargs)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def ask(
    gateway: GatewayServer, key: str = "unused", model: str = "sentiment", **kwargs: Any
) -> dict[str, Any]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        response = client.chat.completions.create(
            model=model, messages=REVIEW, **kwargs  # type: ignore[arg-type]
        )
    return response.model_dump()


def audit_counter(gateway: GatewayServer, outcome: str, kind: str = "sample") -> float:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    text = httpx.get(f"{gateway.url}/metrics", headers=admin).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("coe_audits_total{") and f'outcome="{outcome}"' in line and (
            f'kind="{kind}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll what the gateway shows (counters) until ``condition`` holds: audits end in the
    background, so there is no response to wait on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the gateway never showed it"
        time.sleep(0.005)


def audits_counted(gateway: GatewayServer, n: int) -> bool:
    return sum(audit_counter(gateway, o) for o in ("agree", "no_budget")) >= n


def audits(url: str) -> list[tuple[Any, ...]]:
    return fresh_query(
        url,
        "SELECT request_id, kind, tier, votes, size, served_answer, top_answer, outcome, "
        "cost_usd, billed_to, audit_request_id FROM coe_audits ORDER BY request_id, tier",
    )


def test_the_response_returns_while_its_audit_is_still_waiting_on_the_top_tier(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    gate = Gate()
    upstreams["large"].script(default=Reply(content="positive", gate=gate))
    gateway = serve(audit={"rate": 1.0}, threshold=1)

    body = ask(gateway)  # returns with the gate still shut: the audit cannot have finished

    assert gate.entered.wait(10)  # the audit's top-tier call is in flight, held
    assert body["choices"][0]["message"]["content"] == "positive"
    assert body["coe"]["tier"] == 0
    assert [c["endpoint"] for c in body["coe"]["calls"]] == ["small-a", "small-b", "small-c"]
    gate.open()
    gateway.__exit__(None, None, None)
    ((request_id, kind, tier, *_rest),) = audits(ledger_url)
    assert (request_id, kind, tier) == (body["id"].removeprefix("chatcmpl-"), "sample", 0)


def test_audit_rows_link_the_request_with_agree_disagree_and_top_failed(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    upstreams["large"].script(
        Reply(content="positive"), Reply(content="negative"), Reply(status=500)
    )
    gateway = serve(audit={"rate": 1.0}, threshold=1)
    for _ in range(3):
        ask(gateway)
    gateway.__exit__(None, None, None)

    rows = audits(ledger_url)
    outcomes = sorted(row[7] for row in rows)
    assert outcomes == ["agree", "disagree", "top_failed"]
    for request_id, kind, tier, votes, size, served, top, outcome, cost, billed, audit_id in rows:
        assert (kind, tier, votes, size, served) == ("sample", 0, 3, 3, "positive")
        assert top == {"agree": "positive", "disagree": "negative", "top_failed": None}[outcome]
        assert billed == "admin"
        assert audit_id == f"{request_id}.audit"
        ((parent, purpose, tenant),) = fresh_query(
            ledger_url,
            "SELECT parent_request_id, purpose, tenant FROM coe_requests WHERE request_id = %s",
            (audit_id,),
        )
        assert (parent, purpose, tenant) == (request_id, "audit", "admin")
        calls = fresh_query(
            ledger_url,
            "SELECT endpoint, tier, purpose, cost_usd FROM coe_calls WHERE request_id = %s",
            (audit_id,),
        )
        assert [c[:3] for c in calls] == [("large", 1, "audit")]
        assert cost == pytest.approx(calls[0][3])


def test_an_audit_past_max_in_flight_is_dropped_and_counted(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    gate = Gate()
    upstreams["large"].script(default=Reply(content="positive", gate=gate))
    gateway = serve(audit={"rate": 1.0, "max_in_flight": 1}, threshold=1)

    ask(gateway)
    assert gate.entered.wait(10)
    ask(gateway)

    assert audit_counter(gateway, "dropped") == 1
    assert len(upstreams["large"].requests) == 1
    gate.open()
    gateway.__exit__(None, None, None)
    assert len(audits(ledger_url)) == 1


def test_max_in_flight_counts_each_routes_audits_apart(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    gate = Gate()
    upstreams["large"].script(default=Reply(content="positive", gate=gate))
    gateway = serve(audit={"rate": 1.0, "max_in_flight": 1}, threshold=1, copies=("reviews",))

    ask(gateway)
    assert gate.entered.wait(10)  # the sentiment route's one audit is in flight, held
    ask(gateway, model="reviews")
    wait_for(lambda: len(upstreams["large"].requests) == 2)

    assert audit_counter(gateway, "dropped") == 0
    gate.open()
    gateway.__exit__(None, None, None)
    assert len(audits(ledger_url)) == 2


def test_an_escalated_request_leaves_census_rows_of_its_lower_tier(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    upstreams["small-c"].answer("negative")
    upstreams["large"].answer("negative")
    gateway = serve(audit={"rate": 1.0}, threshold=1, wait_for_all=True)

    body = ask(gateway)
    gateway.__exit__(None, None, None)

    assert body["coe"]["tier"] == 1
    ((request_id, kind, tier, votes, size, served, top, outcome, cost, billed, audit_id),) = (
        audits(ledger_url)
    )
    assert (kind, tier, votes, size) == ("census", 0, 2, 3)
    assert (served, top, outcome) == ("positive", "negative", "disagree")
    assert (cost, billed, audit_id) == (0.0, None, None)
    assert len(upstreams["large"].requests) == 1  # the census makes no call


def test_metrics_count_audits_by_route_tier_kind_and_outcome(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    gateway = serve(audit={"rate": 1.0}, threshold=1, wait_for_all=True)
    ask(gateway)  # unanimous at tier 0: sampled, the top tier agrees
    upstreams["small-c"].answer("negative")
    ask(gateway)  # escalated: census of tier 0's 2/3 for "positive", the top tier agrees

    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    wanted = {
        'coe_audits_total{kind="sample",outcome="agree",route="sentiment",tier="0"} 1.0',
        'coe_audits_total{kind="census",outcome="agree",route="sentiment",tier="0"} 1.0',
    }
    wait_for(
        lambda: wanted <= set(httpx.get(f"{gateway.url}/metrics", headers=admin).text.split("\n"))
    )
    text = httpx.get(f"{gateway.url}/metrics", headers=admin).text
    assert 'coe_audit_cost_usd_total{route="sentiment"}' in text


def test_a_route_without_audit_records_no_census(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    upstreams["small-c"].answer("negative")
    gateway = serve(threshold=1)

    ask(gateway)
    gateway.__exit__(None, None, None)

    assert audits(ledger_url) == []


def test_audits_pause_past_their_share_of_the_routes_spend(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    # One audit of the large model costs far more than half of one tier-0 request.
    first = serve(audit={"rate": 1.0, "max_share_of_spend": 0.5}, threshold=1)
    ask(first)
    first.__exit__(None, None, None)
    assert len(upstreams["large"].requests) == 1

    # A new process seeds its sums from the ledger: past the share at once.
    second = serve(audit={"rate": 1.0, "max_share_of_spend": 0.5}, threshold=1)
    ask(second)

    assert audit_counter(second, "paused") == 1
    assert len(upstreams["large"].requests) == 1


def test_the_audit_report_endpoint_gives_patterns_with_intervals(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["large"].script(Reply(content="negative"), default=Reply(content="positive"))
    gateway = serve(audit={"rate": 1.0}, threshold=1)
    for _ in range(4):
        ask(gateway)
    gateway.__exit__(None, None, None)
    reader = serve(audit={"rate": 1.0}, threshold=1)

    report = httpx.get(f"{reader.url}/v1/coe/audit", params={"route": "sentiment"}).json()

    assert set(report) == {"route", "since", "until", "audit_cost_usd", "patterns"}
    assert (report["route"], report["since"], report["until"]) == ("sentiment", None, None)
    assert report["audit_cost_usd"] > 0
    (pattern,) = report["patterns"]
    assert pattern["tier"] == 0 and pattern["votes"] == "3/3" and pattern["kind"] == "sample"
    assert (pattern["audited"], pattern["agreed"], pattern["agreement"]) == (4, 3, 0.75)
    low, high = clopper_pearson(3, 4)
    assert pattern["ci95"] == [pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6)]
    assert pattern["traffic_share"] == 1.0
    assert pattern["gap"] == 0.25
    assert pattern["gap_ci95"] == [
        pytest.approx(1 - high, abs=1e-6), pytest.approx(1 - low, abs=1e-6)
    ]


def test_the_audit_report_needs_a_route(serve: Callable[..., GatewayServer]) -> None:
    gateway = serve(audit={"rate": 1.0})

    response = httpx.get(f"{gateway.url}/v1/coe/audit")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "route"


def test_audits_billed_to_the_tenant_stop_before_serving_does(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    # Tier 0 answers with max_tokens out (as costly as its worst case allows): fewer requests.
    full = {"prompt_tokens": 10, "completion_tokens": 16, "total_tokens": 26}
    for name in ("small-a", "small-b", "small-c"):
        upstreams[name].answer("positive", usage=full)
    gateway = serve(
        audit={"rate": 1.0, "bill_to": "tenant"},
        threshold=1,
        tenants=[{"name": "acme", "api_key_sha256": [ACME_DIGEST], "budget_usd": 0.0004}],
    )
    seen: list[str] = []  # per served request: its audit's outcome
    for n in range(1, 200):
        try:
            ask(gateway, key=ACME_KEY)
        except openai.RateLimitError:
            break
        # The audit of this request finishes (counted) before the next request starts.
        wait_for(partial(audits_counted, gateway, n))
        seen.append("agree" if audit_counter(gateway, "agree") == seen.count("agree") + 1
                    else "no_budget")
    gateway.__exit__(None, None, None)

    first_refused = seen.index("no_budget")
    assert first_refused > 0
    assert set(seen[first_refused:]) == {"no_budget"}  # once stopped, audits stay stopped
    assert len(seen) > first_refused + 1  # serving went on after audits stopped
    ((spent,),) = fresh_query(ledger_url, "SELECT cost_usd FROM coe_tenant_spend")
    assert spent <= 0.0004
    billed = fresh_query(ledger_url, "SELECT DISTINCT billed_to FROM coe_audits")
    assert billed == [("acme",)]


def test_an_answer_a_middle_tier_accepts_is_sampled_too(
    serve: Callable[..., GatewayServer], upstreams: dict[str, UpstreamServer], ledger_url: str
) -> None:
    upstreams["small-a"].script(default=Reply(content="negative"))
    gateway = serve(
        audit={"rate": 1.0}, threshold=1,
        tiers=[["small-a", "small-b"], ["small-c"], ["large"]],
    )

    body = ask(gateway)  # tier 0 splits 1/2, tier 1 accepts 1/1 below the top tier

    gateway.__exit__(None, None, None)
    assert body["coe"]["tier"] == 1
    ((_id, kind, tier, votes, size, served, top, outcome, *_rest),) = audits(ledger_url)
    assert (kind, tier, votes, size) == ("sample", 1, 1, 1)
    assert (served, top, outcome) == ("positive", "positive", "agree")
