"""The resources the app's lifespan opens, handed to routes as one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from starlette.requests import Request

    from gateway.billing import Biller
    from gateway.budgets import BudgetGuard
    from gateway.config import Settings
    from gateway.engine import CascadeEngine
    from gateway.ledger import Ledger
    from gateway.metrics import Metrics
    from gateway.tenants import KeyRing

STATE_KEY = "coe"


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: CascadeEngine
    ledger: Ledger
    keyring: KeyRing
    biller: Biller
    budgets: BudgetGuard
    metrics: Metrics


def app_state(request: Request) -> AppState:
    """The lifespan's state, as routes see it (``request.state`` carries the lifespan's dict)."""
    return cast("AppState", getattr(request.state, STATE_KEY))
