"""The ledger's interface and the plain values its reports are built from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from gateway.errors import CoEError

if TYPE_CHECKING:
    from gateway.outcome import RequestOutcome

GroupBy = Literal["route", "tier", "endpoint", "day", "tag"]
GROUP_BYS: tuple[GroupBy, ...] = ("route", "tier", "endpoint", "day", "tag")


class LedgerUnavailable(CoEError):
    """The ledger could not be opened or could not commit a request's rows."""


@dataclass(frozen=True, slots=True)
class Window:
    """Which requests a summary covers: one tenant (None: all), ``since`` ≤ time < ``until``."""

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    counterfactual_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    gpu_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Exits:
    """How many requests of one route took their answer from one tier."""

    route: str
    tier: int
    requests: int


@dataclass(frozen=True, slots=True)
class Group:
    key: str
    requests: int
    calls: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """The GPU-priced calls of one endpoint at one tier of one route."""

    route: str
    tier: int
    endpoint: str
    cost_usd: float
    gpu_seconds: float


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    totals: Totals
    exits: tuple[Exits, ...]
    groups: tuple[Group, ...]
    gpu_usage: tuple[GpuUsage, ...]


@dataclass(slots=True)
class LedgerStats:
    """What the writer has done; a commit holds every request of one batch."""

    commits: int = 0
    requests: int = 0
    calls: int = 0
    failed_requests: int = 0


def month_key(moment: datetime) -> str:
    """The calendar month (UTC) a moment falls in, as budgets count it: ``YYYY-MM``."""
    return as_utc(moment).strftime("%Y-%m")


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Ledger(ABC):
    """Durable record of every request and upstream call, and the sums reports are made of."""

    @abstractmethod
    async def record(self, outcome: RequestOutcome) -> None:
        """Return once the request's row and all its call rows are committed."""

    @abstractmethod
    async def spent_this_month(self, tenant: str, *, now: datetime | None = None) -> float:
        """The tenant's committed spend in the calendar month (UTC) of ``now``."""

    @abstractmethod
    async def summarize(self, window: Window, group_by: GroupBy) -> LedgerSummary:
        """Sums over the window's requests, grouped one way."""

    @abstractmethod
    async def aclose(self) -> None:
        """Commit what is queued and stop accepting records."""
