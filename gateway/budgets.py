"""Monthly budgets: a tenant whose ``budget_usd`` for this calendar month (UTC) is spent gets 429.

The spend read is the ledger's per-tenant-month counter, which each batch's transaction updates with
its requests' rows. Every gateway process on one PostgreSQL ledger reads the same committed
counter, so a tenant can overspend only by the requests already in flight when it ran out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.errors import QuotaExceeded
from gateway.ledger import month_key

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.ledger import Ledger


class BudgetGuard:
    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self._budgets = {t.name: t.budget_usd for t in settings.tenants if t.budget_usd is not None}
        self._ledger = ledger

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
