"""Prometheus metrics for one app: every metric lives in the app's own ``CollectorRegistry``.

With several workers (``server.workers``, gateway.serve) each worker's values live in
prometheus-client's multiprocess files in one folder the supervisor made (``multiprocess_dir``),
and a scrape of any worker renders them all with ``MultiProcessCollector``: counters and histograms
are summed over every worker that ran, the breaker and spool gauges over the live ones
(``livesum``), ``coe_config_info`` and ``coe_ledger_available`` are the live workers' max and min.
The ledger's figures, read from the writer's stats with one worker, are then copied into
multiprocess metrics after each request and at each scrape.

Label values come from the config (routes, endpoints, tenants) or from closed sets (decisions,
call statuses, breaker states), so cardinality stays bounded. Latencies are in seconds and costs
in US dollars, as Prometheus naming asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from prometheus_client.metrics_core import Metric

    from gateway.ledger import LedgerStats
    from gateway.outcome import RequestOutcome

# The classic text format every Prometheus reads; prometheus-client's own HTTP handler also
# answers with it when the scraper does not negotiate (newer releases label their default 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BREAKER_STATES = ("closed", "open", "half_open")
# From a local vote in milliseconds to a cascade that reaches a slow top tier.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """A labelled metric's children, kept by label values.

    prometheus-client's ``labels`` validates its arguments and takes a lock on every call: with
    eight to twenty calls per request it was the largest self-time item of the app around the
    engine (bench/RESULTS.md). Label values are bounded sets, so the cache is too.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: Path | None = None
    ) -> None:
        """``multiprocess_dir``: this process is one of several workers whose metrics are written
        there (the process's value class must be prometheus-client's multiprocess one)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        self.requests = Counter(
            "coe_requests",
            "Requests answered, by route, exit tier, decision and outcome status.",
            ["route", "tier", "decision", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "coe_request_duration_seconds",
            "Time from the request's arrival to its decision, by route.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.calls = Counter(
            "coe_upstream_calls",
            "Upstream calls, by endpoint and status (ok, error, timeout, cancelled, unparsable).",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.call_seconds = Histogram(
            "coe_upstream_call_duration_seconds",
            "Latency of upstream calls that ran to completion (cancelled calls excluded), "
            "by endpoint.",
            ["endpoint"],
            buckets=CALL_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "coe_cost_usd",
            "Cost of upstream calls in US dollars, by tenant and endpoint.",
            ["tenant", "endpoint"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "coe_tokens",
            "Tokens reported by upstreams, by tenant, endpoint and direction (in, out).",
            ["tenant", "endpoint", "direction"],
            registry=self.registry,
        )
        self.counterfactual = Counter(
            "coe_counterfactual_cost_usd",
            "What the same requests would have cost on their route's top tier alone, by tenant "
            "and route; compare with coe_cost_usd_total for the savings.",
            ["tenant", "route"],
            registry=self.registry,
        )
        self.breaker = Gauge(
            "coe_circuit_breaker_state",
            "Circuit-breaker state per endpoint: 1 on the current state, 0 on the others "
            "(with several workers: how many workers' breakers are in each state).",
            ["endpoint", "state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.config_info = Gauge(
            "coe_config_info",
            "The config version now serving (sha256 prefix of the config file): 1 on it.",
            ["version"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.config_requests = Counter(
            "coe_config_requests",
            "Requests answered, by the config version that served them.",
            ["version"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "coe_config_reloads",
            "Config reloads asked for, by result (reloaded, unchanged, invalid, restart_required).",
            ["result"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "coe_rate_limited_requests",
            "Requests refused with 429 rate_limit_exceeded (per-tenant concurrency), by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.audits = Counter(
            "coe_audits",
            "Live audits (gateway.audit), by route, tier, kind (sample, census) and outcome: "
            "agree, disagree, top_failed; for samples not run, dropped (max_in_flight), paused "
            "(max_share_of_spend), no_budget (bill_to tenant) or unrecorded (ledger out).",
            ["route", "tier", "kind", "outcome"],
            registry=self.registry,
        )
        self.audit_cost = Counter(
            "coe_audit_cost_usd",
            "What the live audit's top-tier calls cost in US dollars, by route; not in "
            "coe_cost_usd_total, which counts serving.",
            ["route"],
            registry=self.registry,
        )
        self.threshold = Gauge(
            "coe_threshold_in_force",
            "The θ a route with target_agreement serves with now, chosen from its audit (with "
            "several workers: the strictest any live worker has).",
            ["route"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.threshold_choices = Counter(
            "coe_threshold_choices",
            "Times a target route's θ was chosen from its audit, by route.",
            ["route"],
            registry=self.registry,
        )
        self._config_version: str | None = None
        self._ledger_sync: _LedgerSync | None = None
        self._requests = _Children(self.requests)
        self._request_seconds = _Children(self.request_seconds)
        self._calls = _Children(self.calls)
        self._call_seconds = _Children(self.call_seconds)
        self._cost = _Children(self.cost)
        self._tokens = _Children(self.tokens)
        self._counterfactual = _Children(self.counterfactual)

    def observe(self, outcome: RequestOutcome) -> None:
        """Count one finished request and every upstream call it made."""
        self._requests(outcome.route, str(outcome.tier), outcome.decision, outcome.status).inc()
        self._request_seconds(outcome.route).observe(outcome.latency_ms / 1000)
        self._counterfactual(outcome.tenant, outcome.route).inc(outcome.counterfactual_usd)
        if outcome.config_version is not None:
            self.config_requests.labels(outcome.config_version).inc()
        for call in outcome.calls:
            self._calls(call.endpoint, call.status).inc()
            if call.status != "cancelled":
                self._call_seconds(call.endpoint).observe(call.latency_ms / 1000)
            self._cost(outcome.tenant, call.endpoint).inc(call.cost_usd)
            if call.tokens_in:
                self._tokens(outcome.tenant, call.endpoint, "in").inc(call.tokens_in)
            if call.tokens_out:
                self._tokens(outcome.tenant, call.endpoint, "out").inc(call.tokens_out)
        if self._ledger_sync is not None:
            self._ledger_sync.sync()

    def set_breaker_state(self, endpoint: str, state: str) -> None:
        """Record an endpoint's breaker state (``closed``, ``open`` or ``half_open``)."""
        if state not in BREAKER_STATES:
            raise ValueError(f"unknown breaker state {state!r}; expected one of {BREAKER_STATES}")
        for known in BREAKER_STATES:
            self.breaker.labels(endpoint, known).set(1.0 if known == state else 0.0)

    def watch_ledger(self, stats: Callable[[], LedgerStats]) -> None:
        """Expose the ledger writer's state, read at each scrape (and, with several workers,
        copied into multiprocess metrics after each request)."""
        if self._multiprocess_dir is None:
            self.registry.register(_LedgerCollector(stats))
        else:
            self._ledger_sync = _LedgerSync(stats, self.registry)

    def set_config_version(self, version: str) -> None:
        """``coe_config_info{version}``: 1 on the version now serving; the previous one is gone."""
        if self._config_version is not None and self._config_version != version:
            # A worker's multiprocess file keeps a removed series: 0 first, so it reads 0 there.
            self.config_info.labels(self._config_version).set(0.0)
            self.config_info.remove(self._config_version)
        self._config_version = version
        self.config_info.labels(version).set(1.0)

    def set_threshold(self, route: str, theta: float) -> None:
        """A target route's θ in force, just chosen (``gateway.audit``)."""
        self.threshold.labels(route).set(theta)
        self.threshold_choices.labels(route).inc()

    def forget_threshold(self, route: str) -> None:
        """A route reloaded without a target: its θ is no longer chosen."""
        try:
            self.threshold.remove(route)
        except KeyError:
            pass  # never chosen

    def render(self) -> tuple[bytes, str]:
        """The exposition payload and its content type, for ``GET /metrics``."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE
        if self._ledger_sync is not None:
            self._ledger_sync.sync()
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(every_worker), CONTENT_TYPE


_LEDGER_AVAILABLE_HELP = (
    "1 while the ledger commits; 0 while it cannot (requests get 503 ledger_unavailable)."
)
_LEDGER_SPOOLED_HELP = (
    "Requests answered 503 whose calls wait in memory to be written to the ledger."
)
_LEDGER_SPOOL_WRITTEN_HELP = "Spooled requests written to the ledger once it was back."
_LEDGER_UNRECORDED_HELP = (
    "Requests whose upstream calls never reached the ledger (each logged with its cost)."
)
_LEDGER_UNRECORDED_COST_HELP = (
    "Cost in US dollars of the upstream calls that never reached the ledger."
)


class _LedgerSync:
    """The ledger's figures as multiprocess metrics, for a worker among several: gauges set and
    counters advanced from the writer's stats whenever they changed."""

    def __init__(self, stats: Callable[[], LedgerStats], registry: CollectorRegistry) -> None:
        self._stats = stats
        self._seen: tuple[bool, int, int, int, float] | None = None
        # Any worker that cannot commit shows: the live workers' minimum.
        self._available = Gauge(
            "coe_ledger_available",
            _LEDGER_AVAILABLE_HELP,
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._spooled = Gauge(
            "coe_ledger_spooled_requests",
            _LEDGER_SPOOLED_HELP,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._spool_written = Counter(
            "coe_ledger_spool_written_requests", _LEDGER_SPOOL_WRITTEN_HELP, registry=registry
        )
        self._unrecorded = Counter(
            "coe_ledger_unrecorded_requests", _LEDGER_UNRECORDED_HELP, registry=registry
        )
        self._unrecorded_cost = Counter(
            "coe_ledger_unrecorded_cost_usd", _LEDGER_UNRECORDED_COST_HELP, registry=registry
        )
        self.sync()

    def sync(self) -> None:
        stats = self._stats()
        now = (
            stats.available,
            stats.spooled,
            stats.spool_written,
            stats.unrecorded_requests,
            stats.unrecorded_cost_usd,
        )
        if now == self._seen:
            return
        before = self._seen or (True, 0, 0, 0, 0.0)
        self._seen = now
        self._available.set(1.0 if stats.available else 0.0)
        self._spooled.set(stats.spooled)
        self._spool_written.inc(max(0, stats.spool_written - before[2]))
        self._unrecorded.inc(max(0, stats.unrecorded_requests - before[3]))
        self._unrecorded_cost.inc(max(0.0, stats.unrecorded_cost_usd - before[4]))


class _LedgerCollector:
    """The ledger's availability and spool, read from its stats when scraped."""

    def __init__(self, stats: Callable[[], LedgerStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "coe_ledger_available",
            _LEDGER_AVAILABLE_HELP,
            value=1.0 if stats.available else 0.0,
        )
        yield GaugeMetricFamily(
            "coe_ledger_spooled_requests",
            _LEDGER_SPOOLED_HELP,
            value=stats.spooled,
        )
        yield CounterMetricFamily(
            "coe_ledger_spool_written_requests",
            _LEDGER_SPOOL_WRITTEN_HELP,
            value=stats.spool_written,
        )
        yield CounterMetricFamily(
            "coe_ledger_unrecorded_requests",
            _LEDGER_UNRECORDED_HELP,
            value=stats.unrecorded_requests,
        )
        yield CounterMetricFamily(
            "coe_ledger_unrecorded_cost_usd",
            _LEDGER_UNRECORDED_COST_HELP,
            value=stats.unrecorded_cost_usd,
        )
