"""An audit's rows (``coe_audits``) from the outcomes it compares: a served request's and, for a
sample, the top tier's.

What a row records is what the tier saw when it decided (``RequestOutcome.tier_votes``): with an
early quorum a tier that accepted at θ = 2/3 after two agreeing calls shows 2/3 even if its third
call would have agreed, and at θ = 1 a tier abandoned at its first disagreement shows the votes in
by then. The θ in force is on the row, so readers can tell these apart (docs/api.md, "Audit").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.ledger import AuditOutcome, AuditRecord
from policies.vote import token_f1

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.outcome import RequestOutcome
    from policies.answers import AnswerSpec


def agrees(served: str | None, top: str | None, spec: AnswerSpec) -> bool:
    """Whether two normalised answers count as the same, as a tier's vote counts them."""
    if served is None or top is None:
        return False
    if spec.task == "text":
        return served == top or token_f1(served, top) >= spec.text_similarity
    return served == top


def verdict(served: str | None, top: str | None, spec: AnswerSpec) -> AuditOutcome:
    if top is None:
        return "top_failed"
    return "agree" if agrees(served, top, spec) else "disagree"


def winning_label(votes: Mapping[str, int]) -> str | None:
    """The label with most votes; on a tie the first counted (a tier's plurality)."""
    return max(votes, key=lambda label: votes[label], default=None)


def census_records(outcome: RequestOutcome, spec: AnswerSpec) -> list[AuditRecord]:
    """A request the top tier answered: each lower tier's vote pattern against its answer."""
    rows: list[AuditRecord] = []
    for tier, votes in enumerate(outcome.tier_votes[: outcome.tier]):
        label = winning_label(votes)
        rows.append(
            AuditRecord(
                request_id=outcome.request_id,
                kind="census",
                tier=tier,
                route=outcome.route,
                tenant=outcome.tenant,
                created_at=outcome.created_at,
                config_version=outcome.config_version,
                votes=max(votes.values(), default=0),
                size=outcome.tier_size(tier),
                threshold=outcome.threshold,
                served_answer=label,
                top_answer=outcome.answer,
                outcome=verdict(label, outcome.answer, spec),
            )
        )
    return rows


def sample_record(
    served: RequestOutcome, top: RequestOutcome, spec: AnswerSpec
) -> AuditRecord:
    """A sampled request's exit pattern against the top tier's answer (``top``: the audit's own
    outcome; no answer when every top-tier call failed or its deadline passed)."""
    top_answer = top.answer if top.status == "ok" else None
    return AuditRecord(
        request_id=served.request_id,
        kind="sample",
        tier=served.tier,
        route=served.route,
        tenant=served.tenant,
        created_at=served.created_at,
        config_version=served.config_version,
        votes=max(served.votes.values(), default=0),
        size=served.tier_size(served.tier),
        threshold=served.threshold,
        served_answer=served.answer,
        top_answer=top_answer,
        outcome=verdict(served.answer, top_answer, spec),
        cost_usd=top.cost_usd,
        billed_to=top.tenant,
        audit_request_id=top.request_id,
    )
