"""What one gateway request produced: the decision and every upstream call made for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datetime import datetime

    from providers.base import CallRecord

DecisionKind = Literal["agreed", "escalated", "last_tier"]
OutcomeStatus = Literal["ok", "upstream_failed", "deadline_exceeded"]
# "serve": a client's request; "audit": the live audit's top-tier re-ask of one (gateway.audit).
Purpose = Literal["serve", "audit"]


@dataclass(slots=True)
class RequestOutcome:
    request_id: str
    route: str
    tenant: str
    created_at: datetime
    threshold: float
    policy: str
    tags: tuple[str, ...] = ()
    status: OutcomeStatus = "ok"
    answer: str | None = None
    tier: int = 0
    decision: DecisionKind = "agreed"
    agreement: float = 0.0
    votes: dict[str, int] = field(default_factory=dict)
    # Each decided tier's votes per label, tier 0 first (the last is ``votes``): the audit's
    # census reads the lower tiers' vote patterns from them.
    tier_votes: list[dict[str, int]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    latency_ms: float = 0.0
    # Billing fills these: the request's cost, and what its observed tokens (or, for GPU-priced
    # endpoints, mean GPU time) would have cost on the route's top tier alone.
    cost_usd: float = 0.0
    counterfactual_usd: float = 0.0
    # Which config generation served the request (gateway.reload); the ledger stores it.
    config_version: str | None = None
    purpose: Purpose = "serve"
    # On a route with target_agreement: the θ the route served with when the request came
    # (gateway.audit); ``threshold`` differs when the request set its own.
    threshold_in_force: float | None = None
    # An audit's row points at the request it audited.
    parent_request_id: str | None = None

    def tier_size(self, tier: int) -> int:
        """How many endpoints tier ``tier`` called (the engine records one call per slot)."""
        return sum(1 for c in self.calls if c.tier == tier)

    @property
    def tokens_in(self) -> int:
        return sum(c.tokens_in or 0 for c in self.calls)

    @property
    def tokens_out(self) -> int:
        return sum(c.tokens_out or 0 for c in self.calls)

    @property
    def gpu_seconds(self) -> float:
        return sum(c.gpu_seconds for c in self.calls)
