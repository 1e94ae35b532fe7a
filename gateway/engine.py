"""The cascade engine: call a tier's endpoints at once, stop as soon as the vote is decided.

Per tier, every endpoint is called in one anyio task group. Answers are normalised and fed, as they
arrive, to the tier's ``policies.cascade.Tally``, which decides: the tier is accepted as soon as a
label reaches θ and abandoned as soon as none can (unless the route waits for all, as the seed paper
does). Calls still running then are cancelled and recorded as ``cancelled``; one that came back
after the decision is recorded with its answer but did not vote. ``policies.cascade.Cascade`` walks
the tiers; the last reachable tier answers with its plurality. ``coe eval replay`` drives the same
two, so the replay of a recording and the live engine decide alike.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from gateway.outcome import RequestOutcome
from policies.answers import normalise
from policies.cascade import Arrival, Cascade, Tally
from policies.confidence import answer_probability
from policies.gpu_share import GpuShareMeter
from providers.base import CallRecord, CallRequest, Provider
from providers.prompting import prompt_chars

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anyio.abc import ObjectSendStream
    from opentelemetry.trace import Span

    from gateway.plan import CascadePlan
    from gateway.telemetry import Tracing
    from policies.cascade import TierResult


class CascadeEngine:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        gpu_pools: Mapping[str, str] | None = None,
        *,
        tracing: Tracing | None = None,
    ) -> None:
        """``gpu_pools`` maps each GPU-priced endpoint to its GPU server's meter key
        (``EndpointConfig.gpu_meter_key``): those calls' time shares are measured, and calls
        through several endpoints of one server share its time. ``tracing``: a span per tier and
        per call (``gateway.telemetry``); None, no tracing."""
        self._tracing = tracing
        self._gpu_pools = dict(gpu_pools or {})
        self._providers = providers
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
        if self._tracing is not None:
            self._tracing.bind_outcome(outcome)
        call = CallRequest(
            messages=tuple(messages),
            max_tokens=max_tokens or route.max_tokens,
            temperature=route.temperature,
            answer_set=plan.spec.labels if plan.spec.task in ("classify", "choice") else (),
            logprobs=plan.policy == "confidence",
            request_id=request_id,
            response_format=plan.response_format,
        )
        chars = prompt_chars(messages)
        started = time.perf_counter()
        tiers = plan.tiers
        cascade = Cascade(len(tiers))
        with anyio.move_on_after(route.deadline_s) as deadline:
            for index in cascade:
                result = await self._run_tier(plan, index, tiers[index], call, chars, outcome)
                outcome.tier_votes.append(result.votes)
                cascade.settle(result)
        record_cascade(outcome, cascade)
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
    ) -> TierResult:
        size = len(tier)
        slots: list[CallRecord | None] = [None] * size
        tally = Tally(
            plan.spec,
            size,
            plan.threshold,
            policy=plan.policy,
            wait_for_all=plan.route.wait_for_all,
        )
        span = self._tracing.start_tier(index, size) if self._tracing is not None else None
        finished = False
        try:
            vote = self._single if size == 1 else self._race
            await vote(plan, tier, index, call, slots, tally, span)
            finished = True
        finally:
            # Runs on the deadline's cancellation too: every call made is kept for the ledger.
            for slot, record in enumerate(slots):
                if record is None:
                    # Cancelled before it started: no upstream call was made, but the vote was lost.
                    record = CallRecord(endpoint=tier[slot], status="cancelled", tier=index)
                elif not tally.voted(slot):
                    # Finished after the decision: it did not vote, but its answer is on record.
                    _judge(record, plan)
                record.prompt_chars = chars
                outcome.calls.append(record)
            if self._tracing is not None and span is not None:
                text = plan.spec.task == "text"
                self._tracing.end_tier(span, tally, text_votes=text, finished=finished)
        return tally.result()

    async def _single(
        self,
        plan: CascadePlan,
        tier: tuple[str, ...],
        index: int,
        call: CallRequest,
        slots: list[CallRecord | None],
        tally: Tally,
        span: Span | None,
    ) -> None:
        """A tier of one endpoint: nothing to race, so the call is made in this task, without
        the task group and stream of ``_race`` (bench/RESULTS.md), and its one vote decides."""
        await self._call(0, tier[0], index, call, slots, span)
        record = slots[0]
        assert record is not None
        _judge(record, plan)
        tally.arrive(_arrival(0, record, plan))

    async def _race(
        self,
        plan: CascadePlan,
        tier: tuple[str, ...],
        index: int,
        call: CallRequest,
        slots: list[CallRecord | None],
        tally: Tally,
        span: Span | None,
    ) -> None:
        """Every call of the tier at once; each vote as it arrives, until the tally decides."""
        send, receive = anyio.create_memory_object_stream[int](len(tier))
        async with anyio.create_task_group() as group:
            for slot, name in enumerate(tier):
                group.start_soon(self._reported_call, slot, name, index, call, slots, send.clone(),
                                 span)
            send.close()
            async with receive:
                async for slot in receive:
                    record = slots[slot]
                    assert record is not None
                    _judge(record, plan)
                    if tally.arrive(_arrival(slot, record, plan)).action != "wait":
                        # With every call back there is nothing to stop, and anyio's cancel
                        # formats the task's repr for its message: skip it.
                        if tally.pending:
                            group.cancel_scope.cancel()
                        break

    async def _reported_call(
        self,
        slot: int,
        name: str,
        tier: int,
        call: CallRequest,
        slots: list[CallRecord | None],
        done: ObjectSendStream[int],
        tier_span: Span | None,
    ) -> None:
        """``_call``, then its slot sent to the tier's vote; the stream closes either way."""
        async with done:
            await self._call(slot, name, tier, call, slots, tier_span)
            await done.send(slot)

    async def _call(
        self,
        slot: int,
        name: str,
        tier: int,
        call: CallRequest,
        slots: list[CallRecord | None],
        tier_span: Span | None = None,
    ) -> None:
        tracing, span = self._tracing, None
        if tracing is not None and tier_span is not None:
            span, headers = tracing.start_call(name, tier_span, call.max_tokens)
            call = replace(call, headers=headers)
        pool = self._gpu_pools.get(name)
        ticket = self._meter.begin(pool, time.monotonic()) if pool is not None else None
        started = time.perf_counter()
        record: CallRecord | None = None
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
        finally:
            # Ended here, cancelled or not: Span.end does not await, so needs no shield.
            if tracing is not None and span is not None:
                tracing.end_call(span, record)
        self._finish(record, tier, ticket)
        slots[slot] = record

    def _finish(self, record: CallRecord, tier: int, ticket: Any) -> None:
        record.tier = tier
        if ticket is not None:
            record.gpu_seconds = self._meter.end(ticket, time.monotonic())


def record_cascade(outcome: RequestOutcome, cascade: Cascade) -> None:
    """Write where ``cascade`` stands into ``outcome``: the tier reached, the votes of the last
    tier decided and, once the cascade has a verdict, its answer (the replay records its
    simulated requests with this too)."""
    outcome.tier = cascade.tier
    if cascade.result is not None:
        outcome.votes = cascade.result.votes
        outcome.agreement = cascade.result.decision.agreement
    if cascade.verdict is not None:
        outcome.answer = cascade.verdict.answer
        outcome.decision = cascade.verdict.decision
        outcome.status = cascade.verdict.status


def _arrival(slot: int, record: CallRecord, plan: CascadePlan) -> Arrival:
    """A judged call as the tier's tally reads it."""
    confidence: tuple[str | None, float] = (None, 0.0)
    if plan.policy == "confidence" and record.status == "ok":
        confidence = answer_probability(record.text, record.logprobs, plan.spec)
    return Arrival(slot, record.answer, record.mean_logprob, confidence)


def _judge(record: CallRecord, plan: CascadePlan) -> None:
    if record.status != "ok":
        return
    record.answer = normalise(record.text, plan.spec)
    if record.answer is None:
        record.status = "unparsable"
