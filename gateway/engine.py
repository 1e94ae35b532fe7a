"""The cascade engine: call a tier's endpoints at once, stop as soon as the vote is decided.

Per tier, every endpoint is called in one anyio task group. Answers are normalised and counted as
they arrive; the tier is accepted as soon as a label reaches θ and abandoned as soon as none can
(unless the route waits for all, as the seed paper does). Calls still running then are cancelled and
recorded as ``cancelled``. The last reachable tier answers with its plurality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from gateway.outcome import RequestOutcome
from policies.answers import normalise
from policies.confidence import answer_probability, decide_confidence
from policies.gpu_share import GpuShareMeter
from policies.vote import Ballot, CastVote, Decision, decide, plurality
from providers.base import CallRecord, CallRequest, Provider
from providers.prompting import prompt_chars

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anyio.abc import ObjectSendStream

    from gateway.plan import CascadePlan


@dataclass(slots=True)
class _TierResult:
    decision: Decision
    votes: dict[str, int]
    cast: list[CastVote]


class CascadeEngine:
    def __init__(self, providers: Mapping[str, Provider], gpu_endpoints: frozenset[str]) -> None:
        """``gpu_endpoints`` are priced by GPU time, so their calls' time shares are measured."""
        self._providers = providers
        self._gpu_endpoints = gpu_endpoints
        self._meter = GpuShareMeter()

    async def run(
        self,
        plan: CascadePlan,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_id: str,
        tenant: str,
        max_tokens: int | None = None,
    ) -> RequestOutcome:
        """Run the cascade; never raises for upstream trouble (the outcome's status says)."""
        route = plan.route
        outcome = RequestOutcome(
            request_id=request_id,
            route=plan.route_name,
            tenant=tenant,
            created_at=datetime.now(UTC),
            threshold=plan.threshold,
            policy=plan.policy,
            tags=plan.tags,
        )
        call = CallRequest(
            messages=tuple(messages),
            max_tokens=max_tokens or route.max_tokens,
            temperature=route.temperature,
            answer_set=plan.spec.labels if plan.spec.task in ("classify", "choice") else (),
            logprobs=plan.policy == "confidence",
            request_id=request_id,
        )
        chars = prompt_chars(messages)
        started = time.perf_counter()
        tiers = plan.tiers
        with anyio.move_on_after(route.deadline_s) as deadline:
            for index, tier in enumerate(tiers):
                outcome.tier = index
                result = await self._run_tier(plan, index, tier, call, chars, outcome)
                outcome.votes = result.votes
                outcome.agreement = result.decision.agreement
                if result.decision.action == "accept":
                    outcome.answer = result.decision.label
                    outcome.decision = "agreed" if index == 0 else "escalated"
                    break
                if index == len(tiers) - 1:
                    outcome.answer = plurality(result.cast)
                    outcome.decision = "last_tier"
                    if outcome.answer is None:
                        outcome.status = "upstream_failed"
        if deadline.cancelled_caught:
            outcome.status = "deadline_exceeded"
            outcome.answer = None
        outcome.latency_ms = (time.perf_counter() - started) * 1000.0
        return outcome

    async def _run_tier(
        self,
        plan: CascadePlan,
        index: int,
        tier: tuple[str, ...],
        call: CallRequest,
        chars: int,
        outcome: RequestOutcome,
    ) -> _TierResult:
        size = len(tier)
        slots: list[CallRecord | None] = [None] * size
        ballot = Ballot(plan.spec)
        confidences: list[tuple[str | None, float]] = []
        cast: list[CastVote | None] = [None] * size
        decision = Decision(action="wait", label=None, agreement=0.0)
        send, receive = anyio.create_memory_object_stream[int](size)
        try:
            async with anyio.create_task_group() as group:
                for slot, name in enumerate(tier):
                    group.start_soon(self._call, slot, name, index, call, slots, send.clone())
                send.close()
                pending = size
                async with receive:
                    async for slot in receive:
                        pending -= 1
                        record = slots[slot]
                        assert record is not None
                        _judge(record, plan)
                        label = ballot.cast(record.answer)
                        cast[slot] = CastVote(label=label, mean_logprob=record.mean_logprob)
                        if plan.policy == "confidence":
                            confidences.append(
                                answer_probability(record.text, record.logprobs, plan.spec)
                                if record.status == "ok"
                                else (None, 0.0)
                            )
                            decision = decide_confidence(confidences, pending, size, plan.threshold)
                        else:
                            decision = decide(ballot.votes, pending, size, plan.threshold)
                        if decision.action != "wait" and not plan.route.wait_for_all:
                            # With every call back there is nothing to stop, and anyio's cancel
                            # formats the task's repr for its message: skip it.
                            if pending:
                                group.cancel_scope.cancel()
                            break
        finally:
            # Runs on the deadline's cancellation too: every call made is kept for the ledger.
            for slot, record in enumerate(slots):
                if record is None:
                    # Cancelled before it started: no upstream call was made, but the vote was lost.
                    record = CallRecord(endpoint=tier[slot], status="cancelled", tier=index)
                elif cast[slot] is None:
                    # Finished after the decision: it did not vote, but its answer is on record.
                    _judge(record, plan)
                record.prompt_chars = chars
                outcome.calls.append(record)
        # Cancelled calls did not vote; keep the configured order for the tie-break.
        ordered = [c if c is not None else CastVote(label=None, mean_logprob=None) for c in cast]
        if plan.route.wait_for_all:
            decision = (
                decide_confidence(confidences, 0, size, plan.threshold)
                if plan.policy == "confidence"
                else decide(ballot.votes, 0, size, plan.threshold)
            )
            if decision.action == "accept" and plan.policy == "vote":
                # With θ ≤ 1/2 two labels can both reach θ; break that tie as the last tier does,
                # not by arrival order.
                decision = replace(decision, label=plurality(ordered))
        return _TierResult(decision=decision, votes=ballot.votes, cast=ordered)

    async def _call(
        self,
        slot: int,
        name: str,
        tier: int,
        call: CallRequest,
        slots: list[CallRecord | None],
        done: ObjectSendStream[int],
    ) -> None:
        metered = name in self._gpu_endpoints
        ticket = self._meter.begin(name, time.monotonic()) if metered else None
        started = time.perf_counter()
        async with done:
            try:
                record = await self._providers[name].complete(call)
            except anyio.get_cancelled_exc_class():
                record = CallRecord(
                    endpoint=name,
                    status="cancelled",
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                )
                self._finish(record, tier, ticket)
                slots[slot] = record
                raise
            self._finish(record, tier, ticket)
            slots[slot] = record
            await done.send(slot)

    def _finish(self, record: CallRecord, tier: int, ticket: Any) -> None:
        record.tier = tier
        if ticket is not None:
            record.gpu_seconds = self._meter.end(ticket, time.monotonic())


def _judge(record: CallRecord, plan: CascadePlan) -> None:
    if record.status != "ok":
        return
    record.answer = normalise(record.text, plan.spec)
    if record.answer is None:
        record.status = "unparsable"
