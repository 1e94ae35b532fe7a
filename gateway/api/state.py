"""The resources the app's lifespan opens, handed to routes as one typed object.

What the config file decides (settings, keys, prices, budgets, engine) is the current
``Generation`` of ``config`` (gateway.reload), swapped by a reload; the properties below read the
current one. A route that uses several of them for one request takes the generation once
(``state.config.use()``), so a reload in between cannot mix two configs in one request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from gateway.audit import ThresholdsInForce
from gateway.contention import LoopLag
from gateway.reload import ConfigHolder, Generation, Reloader, settings_version
from gateway.tenants import TenantLimiter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

    from gateway.audit import Auditor
    from gateway.billing import Biller
    from gateway.budgets import BudgetGuard
    from gateway.config import Settings
    from gateway.engine import CascadeEngine
    from gateway.ledger import Ledger
    from gateway.metrics import Metrics
    from gateway.reload import ConfigSource, Resources
    from gateway.tenants import KeyRing
    from providers.base import Provider

STATE_KEY = "coe"


class AppState:
    __slots__ = (
        "auditor",
        "config",
        "ledger",
        "loop_lag",
        "metrics",
        "reloader",
        "tenant_limits",
        "thresholds",
    )

    def __init__(
        self,
        settings: Settings,
        engine: CascadeEngine,
        ledger: Ledger,
        keyring: KeyRing,
        biller: Biller,
        budgets: BudgetGuard,
        metrics: Metrics,
        *,
        version: str | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.config = ConfigHolder(
            Generation(
                version=version or settings_version(settings),
                settings=settings,
                keyring=keyring,
                biller=biller,
                budgets=budgets,
                engine=engine,
                providers=providers or {},
            )
        )
        # Settings built in code have no file to re-read.
        self.reloader: Reloader | None = None
        self.tenant_limits = TenantLimiter()
        # Probed by the lifespan (gateway.contention); never contended without it.
        self.loop_lag = LoopLag()
        # The live audit (gateway.audit), run by the lifespan; None: nothing is audited.
        self.auditor: Auditor | None = None
        # The θ target routes serve with, set by the lifespan's ThresholdController.
        self.thresholds = ThresholdsInForce()

    @classmethod
    def from_generation(
        cls, first: Generation, resources: Resources, source: ConfigSource | None
    ) -> AppState:
        """The lifespan's state; with a ``source`` the config can be reloaded from it."""
        state = cls.__new__(cls)
        state.ledger = resources.ledger
        state.metrics = resources.metrics
        state.config = ConfigHolder(first)
        state.reloader = Reloader(state.config, resources, source) if source is not None else None
        state.tenant_limits = TenantLimiter()
        state.loop_lag = LoopLag()
        state.auditor = None
        state.thresholds = ThresholdsInForce()
        return state

    @property
    def settings(self) -> Settings:
        return self.config.current.settings

    @property
    def engine(self) -> CascadeEngine:
        return self.config.current.engine

    @property
    def keyring(self) -> KeyRing:
        return self.config.current.keyring

    @property
    def biller(self) -> Biller:
        return self.config.current.biller

    @property
    def budgets(self) -> BudgetGuard:
        return self.config.current.budgets


def app_state(request: Request) -> AppState:
    """The lifespan's state, as routes see it (``request.state`` carries the lifespan's dict)."""
    return cast("AppState", getattr(request.state, STATE_KEY))
