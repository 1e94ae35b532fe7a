"""The ledger's interface and the plain values its reports are built from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.ledger._audits import AuditCounts, AuditRecord
    from gateway.outcome import RequestOutcome
    from policies.target import AuditRow

GroupBy = Literal["route", "tier", "endpoint", "day", "tag"]
GROUP_BYS: tuple[GroupBy, ...] = ("route", "tier", "endpoint", "day", "tag")


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
class Reserved:
    """Budget reservations not settled yet: requests in flight, or left by a stopped process
    (released once they expire)."""

    requests: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class AuditSpend:
    """The live audit's own requests (gateway.audit), kept out of the serving totals."""

    requests: int = 0
    calls: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    totals: Totals
    exits: tuple[Exits, ...]
    groups: tuple[Group, ...]
    gpu_usage: tuple[GpuUsage, ...]
    reserved: Reserved = Reserved()
    audit: AuditSpend = AuditSpend()


@dataclass(frozen=True, slots=True)
class Reservation:
    """A request's worst-case cost, held against its tenant's budget until settled or released."""

    reservation_id: str
    request_id: str
    tenant: str
    month: str
    amount_usd: float


@dataclass(frozen=True, slots=True)
class Hold:
    """What a reservation attempt found: the reservation, or None when it did not fit; and the
    tenant-month's committed spend and reserved sum (including this reservation, when made)."""

    reservation: Reservation | None
    spent_usd: float
    reserved_usd: float


@dataclass(slots=True)
class LedgerStats:
    """What the writer has done; a commit holds every request of one batch."""

    commits: int = 0
    requests: int = 0
    calls: int = 0
    # Requests whose ``record`` raised (their client got 503): spooled, or unrecorded.
    failed_requests: int = 0
    # Whether the last write (or retry) committed; false while the database is out.
    available: bool = True
    # Failed requests held in memory, written once the database is back; how many were.
    spooled: int = 0
    spool_written: int = 0
    # Requests whose calls never reached the ledger (a row the database refuses, a full spool,
    # or a spool still held at shutdown): each is logged with its cost.
    unrecorded_requests: int = 0
    unrecorded_cost_usd: float = 0.0


def ledger_int(value: object) -> int:
    # PostgreSQL sums BIGINT columns into NUMERIC, which psycopg returns as Decimal.
    if isinstance(value, int | float | Decimal):
        return int(value)
    raise TypeError(f"expected a number from the ledger, got {value!r}")


def ledger_float(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float | Decimal):
        return float(value)
    raise TypeError(f"expected a number from the ledger, got {value!r}")


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
    async def record(
        self, outcome: RequestOutcome, *, reservation: Reservation | None = None
    ) -> None:
        """Return once the request's row and all its call rows are committed, with its budget
        reservation (if any) settled to its cost in the same transaction."""

    @abstractmethod
    def ensure_available(self) -> None:
        """Raise ``LedgerUnavailable`` while the ledger is known not to commit."""

    @abstractmethod
    async def readiness(self) -> tuple[bool, str]:
        """Whether the ledger commits now, and a reason when not (``/readyz``)."""

    @abstractmethod
    async def reserve(
        self,
        tenant: str,
        amount_usd: float,
        budget_usd: float,
        *,
        request_id: str,
        expires_in_s: float,
        now: datetime | None = None,
    ) -> Hold:
        """Add ``amount_usd`` to the tenant-month's reserved sum if spent + reserved + amount ≤
        budget (and spent < budget), atomically across processes."""

    @abstractmethod
    async def release(self, reservation: Reservation) -> None:
        """Give a reservation back unsettled (its request made no call to bill)."""

    @abstractmethod
    async def spent_this_month(self, tenant: str, *, now: datetime | None = None) -> float:
        """The tenant's committed spend in the calendar month (UTC) of ``now``."""

    @abstractmethod
    async def summarize(self, window: Window, group_by: GroupBy) -> LedgerSummary:
        """Sums over the window's requests, grouped one way."""

    @abstractmethod
    async def record_audit(
        self,
        audits: Sequence[AuditRecord],
        *,
        outcome: RequestOutcome | None = None,
        reservation: Reservation | None = None,
    ) -> None:
        """Commit the live audit's rows, with its own request (purpose ``audit``) if any."""

    @abstractmethod
    async def audit_counts(self, route: str, window: Window) -> AuditCounts:
        """Evidence, traffic per pattern and audit cost of one route over a window."""

    @abstractmethod
    async def route_spend(self) -> dict[str, tuple[float, float]]:
        """Every route's (serving, audit) spend over the whole ledger."""

    @abstractmethod
    async def recent_audits(
        self, route: str, *, until: datetime, per_stratum: int
    ) -> list[AuditRow]:
        """The θ controller's evidence (policies.target): the latest ``per_stratum`` audited rows
        of each (tier, size, kind, votes, θ in force) served before ``until``, oldest first."""

    @abstractmethod
    async def aclose(self) -> None:
        """Commit what is queued and stop accepting records."""
