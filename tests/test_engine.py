"""The cascade engine with small in-process providers: ordering by events, no HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from gateway.config import RouteConfig
from gateway.engine import CascadeEngine
from gateway.plan import CoEOverrides, make_plan
from providers.base import CallRecord, CallRequest, Provider, TokenLogprob

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "Is this good? yes/no"}]


class ScriptedProvider(Provider):
    """Answers ``text`` once ``release`` is set (immediately when it is None)."""

    def __init__(
        self,
        name: str,
        text: str | None,
        *,
        status: str = "ok",
        release: anyio.Event | None = None,
        logprob: float | None = None,
    ) -> None:
        self.name = name
        self.text = text
        self.status = status
        self.release = release
        self.logprob = logprob
        self.started = anyio.Event()
        self.calls: list[CallRequest] = []

    async def complete(self, request: CallRequest) -> CallRecord:
        self.calls.append(request)
        self.started.set()
        if self.release is not None:
            await self.release.wait()
        logprobs = (
            (TokenLogprob(token=self.text or "", logprob=self.logprob),)
            if self.logprob is not None
            else None
        )
        return CallRecord(
            endpoint=self.name,
            status=self.status,  # type: ignore[arg-type]
            text=self.text,
            tokens_in=5,
            tokens_out=1,
            logprobs=logprobs,
        )


def route(**overrides: Any) -> RouteConfig:
    fields: dict[str, Any] = {
        "labels": ["yes", "no"],
        "threshold": 0.66,
        "tiers": [["a", "b", "c"], ["big"]],
        **overrides,
    }
    return RouteConfig.model_validate(fields)


async def run(
    providers: Mapping[str, Provider],
    headers: Mapping[str, str] | None = None,
    **route_fields: Any,
) -> Any:
    plan = make_plan("r", route(**route_fields), CoEOverrides(), headers or {})
    engine = CascadeEngine(providers)
    return await engine.run(plan, MESSAGES, request_id="req-1", tenant="t")


def trio(a: str | None, b: str | None, c: str | None, big: str = "no") -> dict[str, Provider]:
    return {
        "a": ScriptedProvider("a", a),
        "b": ScriptedProvider("b", b),
        "c": ScriptedProvider("c", c),
        "big": ScriptedProvider("big", big),
    }


async def test_agreement_at_tier_zero_never_calls_the_next_tier() -> None:
    providers = trio("yes", "Yes.", "**yes**")

    outcome = await run(providers)

    assert (outcome.answer, outcome.tier, outcome.decision) == ("yes", 0, "agreed")
    assert providers["big"].calls == []  # type: ignore[attr-defined]


async def test_quorum_answers_while_a_call_is_still_held() -> None:
    never = anyio.Event()
    providers = trio("yes", "yes", None)
    providers["c"] = ScriptedProvider("c", "no", release=never)

    outcome = await run(providers)

    assert outcome.answer == "yes"
    assert [c.status for c in outcome.calls] == ["ok", "ok", "cancelled"]
    assert providers["c"].started.is_set()  # type: ignore[attr-defined]


async def test_disagreement_escalates_without_waiting_for_the_held_call() -> None:
    never = anyio.Event()
    providers = trio("yes", "no", None, big="no")
    providers["c"] = ScriptedProvider("c", "yes", release=never)

    outcome = await run(providers, threshold=1)

    assert (outcome.answer, outcome.tier, outcome.decision) == ("no", 1, "escalated")
    assert [c.endpoint for c in outcome.calls] == ["a", "b", "c", "big"]
    assert outcome.calls[2].status == "cancelled"


async def test_unparsable_answer_is_marked_and_votes_for_nothing() -> None:
    outcome = await run(trio("yes", "yes", "banana bread"), threshold=1)

    assert outcome.calls[2].status == "unparsable"
    assert outcome.tier == 1


async def test_failed_calls_count_in_the_denominator() -> None:
    providers = trio("yes", None, None)
    providers["b"] = ScriptedProvider("b", None, status="error")
    providers["c"] = ScriptedProvider("c", None, status="timeout")

    outcome = await run(providers)

    assert outcome.tier == 1
    assert outcome.votes == {"no": 1}


async def test_everything_failing_is_upstream_failed() -> None:
    providers = {n: ScriptedProvider(n, None, status="error") for n in ("a", "b", "c", "big")}

    outcome = await run(providers)

    assert outcome.status == "upstream_failed"
    assert outcome.answer is None
    assert len(outcome.calls) == 4


async def test_last_tier_breaks_ties_by_mean_logprob() -> None:
    providers: dict[str, Provider] = {
        "a": ScriptedProvider("a", "yes", logprob=-2.0),
        "b": ScriptedProvider("b", "no", logprob=-0.1),
    }

    outcome = await run(providers, tiers=[["a", "b"]], threshold=1)

    assert (outcome.answer, outcome.decision) == ("no", "last_tier")


async def test_last_tier_breaks_ties_by_order_without_logprobs() -> None:
    providers: dict[str, Provider] = {
        "a": ScriptedProvider("a", "no"),
        "b": ScriptedProvider("b", "yes"),
    }

    outcome = await run(providers, tiers=[["a", "b"]], threshold=1)

    assert outcome.answer == "no"


async def test_max_tier_caps_the_climb() -> None:
    providers = trio("yes", "no", "yes")

    outcome = await run(providers, headers={"x-coe-max-tier": "0"}, threshold=1)

    assert (outcome.answer, outcome.tier, outcome.decision) == ("yes", 0, "last_tier")
    assert providers["big"].calls == []  # type: ignore[attr-defined]


async def test_wait_for_all_lets_every_call_finish() -> None:
    release = anyio.Event()
    providers = trio("yes", "yes", None)
    providers["c"] = ScriptedProvider("c", "no", release=release)

    async with anyio.create_task_group() as group:
        async def open_when_started() -> None:
            await providers["c"].started.wait()  # type: ignore[attr-defined]
            release.set()

        group.start_soon(open_when_started)
        outcome = await run(providers, wait_for_all=True)

    assert [c.status for c in outcome.calls] == ["ok", "ok", "ok"]
    assert outcome.votes == {"yes": 2, "no": 1}


async def test_deadline_cancels_everything_and_keeps_the_calls() -> None:
    never = anyio.Event()
    providers = {n: ScriptedProvider(n, "yes", release=never) for n in ("a", "b", "c", "big")}

    outcome = await run(providers, deadline_s=0.05)

    assert outcome.status == "deadline_exceeded"
    assert [c.status for c in outcome.calls] == ["cancelled"] * 3


async def test_confidence_policy_asks_for_logprobs_and_accepts_a_sure_model() -> None:
    providers: dict[str, Provider] = {
        "a": ScriptedProvider("a", "yes", logprob=-0.01),
        "big": ScriptedProvider("big", "no"),
    }

    outcome = await run(providers, tiers=[["a"], ["big"]], policy="confidence", threshold=0.9)

    assert (outcome.answer, outcome.tier) == ("yes", 0)
    assert providers["a"].calls[0].logprobs is True  # type: ignore[attr-defined]


async def test_confidence_policy_defers_an_unsure_model() -> None:
    providers: dict[str, Provider] = {
        "a": ScriptedProvider("a", "yes", logprob=-1.5),
        "big": ScriptedProvider("big", "no"),
    }

    outcome = await run(providers, tiers=[["a"], ["big"]], policy="confidence", threshold=0.9)

    assert (outcome.answer, outcome.tier) == ("no", 1)


async def test_calls_carry_the_label_set_for_constrained_decoding() -> None:
    providers = trio("yes", "yes", "yes")

    await run(providers)

    assert providers["a"].calls[0].answer_set == ("yes", "no")  # type: ignore[attr-defined]


async def test_wait_for_all_breaks_a_tie_at_half_by_configured_order_not_arrival() -> None:
    release = anyio.Event()
    providers: dict[str, Provider] = {
        "a": ScriptedProvider("a", "yes", release=release),
        "b": ScriptedProvider("b", "no"),
    }

    async with anyio.create_task_group() as group:
        async def open_when_b_answered() -> None:
            await providers["b"].started.wait()  # type: ignore[attr-defined]
            await anyio.sleep(0.01)
            release.set()

        group.start_soon(open_when_b_answered)
        outcome = await run(providers, tiers=[["a", "b"]], threshold=0.5, wait_for_all=True)

    assert (outcome.answer, outcome.decision, outcome.agreement) == ("yes", "agreed", 0.5)
    assert outcome.votes == {"no": 1, "yes": 1}


async def test_a_one_endpoint_tier_is_decided_by_its_one_vote() -> None:
    providers = {"solo": ScriptedProvider("solo", "no"), "big": ScriptedProvider("big", "yes")}

    outcome = await run(providers, tiers=[["solo"], ["big"]])

    assert (outcome.answer, outcome.tier, outcome.votes) == ("no", 0, {"no": 1})
    assert [(c.endpoint, c.tier, c.status) for c in outcome.calls] == [("solo", 0, "ok")]


async def test_an_unparsable_one_endpoint_tier_escalates() -> None:
    providers = {"solo": ScriptedProvider("solo", "maybe"), "big": ScriptedProvider("big", "yes")}

    outcome = await run(providers, tiers=[["solo"], ["big"]])

    assert (outcome.answer, outcome.tier) == ("yes", 1)
    assert [c.status for c in outcome.calls] == ["unparsable", "ok"]


async def test_deadline_cancels_a_one_endpoint_tier_and_keeps_its_call() -> None:
    never = anyio.Event()
    providers = {"solo": ScriptedProvider("solo", "yes", release=never)}

    outcome = await run(providers, tiers=[["solo"]], deadline_s=0.05)

    assert outcome.status == "deadline_exceeded"
    assert [(c.endpoint, c.tier, c.status) for c in outcome.calls] == [("solo", 0, "cancelled")]
    assert outcome.calls[0].latency_ms > 0
