"""Monthly budgets, held hard: a request reserves its worst-case cost before any upstream call.

The rule, per tenant and calendar month (UTC): a request may start only if
``spent + reserved + worst_case ≤ budget`` (and ``spent < budget``), where ``spent`` is the
ledger's committed spend, ``reserved`` the worst cases of the tenant's requests in flight, and
``worst_case`` this request's (``Biller.worst_case``); otherwise it gets 429 and calls nothing.
The check and the reservation are one atomic conditional update in the ledger, so it holds across
workers and replicas on one PostgreSQL (or one SQLite file). When the request is recorded its
reservation is settled to its actual cost in the same transaction as its rows. A reservation left
by a process that stopped expires after the route's deadline plus ``RESERVATION_MARGIN_S`` and is
then released by whichever process looks first (at start, or the tenant's next reservation).

Settled spend stays within the budget as long as each request costs at most its worst case. It can
exceed it only by what upstream usage exceeds the estimates: prompt tokens counted by the
upstream beyond the ~4-characters-a-token estimate of the messages' text (instructions the
gateway adds, tokenizers), and prompt-cache writes billed above the input rate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.errors import QuotaExceeded
from gateway.ledger import month_key

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.ledger import Ledger, Reservation

# How long after its route's deadline a reservation is kept before any process may release it:
# time to bill and commit the request after its deadline.
RESERVATION_MARGIN_S = 60.0


class BudgetGuard:
    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self._budgets = {t.name: t.budget_usd for t in settings.tenants if t.budget_usd is not None}
        self._ledger = ledger

    def budget(self, tenant: str) -> float | None:
        return self._budgets.get(tenant)

    async def check(self, tenant: str, *, now: datetime | None = None) -> None:
        """Raise ``QuotaExceeded`` when the tenant's budget for this month is spent."""
        budget = self._budgets.get(tenant)
        if budget is None:
            return
        moment = now or datetime.now(UTC)
        spent = await self._ledger.spent_this_month(tenant, now=moment)
        if spent >= budget:
            raise QuotaExceeded(
                f"tenant {tenant!r} has spent ${spent:.4f} of its ${budget:.2f} budget for "
                f"{month_key(moment)}; requests resume next month or when the budget is raised"
            )

    async def reserve(
        self,
        tenant: str,
        worst_case_usd: float,
        *,
        request_id: str,
        deadline_s: float,
        now: datetime | None = None,
        headroom_usd: float = 0.0,
    ) -> Reservation | None:
        """Hold ``worst_case_usd`` of the tenant's budget for one request, or raise
        ``QuotaExceeded``; None for a tenant without a budget (nothing to hold).
        ``headroom_usd``: hold only if that much of the budget is still free after it (the live
        audit keeps a request's worst case free, so audits stop before serving does)."""
        budget = self._budgets.get(tenant)
        if budget is None:
            return None
        moment = now or datetime.now(UTC)
        hold = await self._ledger.reserve(
            tenant,
            worst_case_usd,
            budget - headroom_usd,
            request_id=request_id,
            expires_in_s=deadline_s + RESERVATION_MARGIN_S,
            now=moment,
        )
        if hold.reservation is None:
            raise QuotaExceeded(
                f"tenant {tenant!r} has spent ${hold.spent_usd:.6f} and holds "
                f"${hold.reserved_usd:.6f} for requests in flight, of its ${budget:.6f} budget "
                f"for {month_key(moment)}; this request may cost up to ${worst_case_usd:.6f} "
                "(every tier it may reach, max_tokens out), which does not fit. Retry when "
                "requests in flight finish, lower max_tokens or coe.max_tier, or raise the budget"
            )
        return hold.reservation
