"""Config changes without downtime: each config is a ``Generation``, swapped atomically.

A generation is everything the config file decides for a request: the settings, the key ring,
the biller, the budgets and the engine with its providers. ``ConfigHolder`` keeps the current one
in one reference; a request takes it once, at its start (``ConfigHolder.use``), and finishes on it
whatever reloads happen meanwhile. A reload builds the next generation beside the current one and
swaps the reference; the old generation's providers are closed once its last request has finished
(a count of requests per generation), except those the new generation still uses: an endpoint whose
``[[endpoints]]`` table did not change keeps its provider, its breaker and its concurrency limit.

What a generation does not own lives as long as the process: the HTTP client, the ledger, the
metrics, the traces and uvicorn's listening socket. So ``[ledger]``, ``[telemetry]`` and
``[server]`` (except the per-tenant limits, ``RELOADABLE_SERVER_KEYS``) need a restart: a reload
that changes them is refused, naming the keys, and the running config keeps serving. So does a
file that does not load: the answer carries the same file/key/problem lines as a failed start.

A config's version is the first 12 hex digits of the sha256 of the file's bytes (or, for settings
built in code, of their JSON): metrics (``coe_config_info``), logs and the ledger carry it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from gateway.billing import Biller
from gateway.budgets import BudgetGuard
from gateway.config import parse_settings, read_config
from gateway.engine import CascadeEngine
from gateway.errors import ConfigError, ReloadRefused
from gateway.tenants import KeyRing
from providers.errors import ProviderError
from providers.registry import build_providers

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    import httpx

    from gateway.config import Settings
    from gateway.ledger import Ledger
    from gateway.metrics import Metrics
    from gateway.telemetry import Tracing
    from providers.base import Provider

log = logging.getLogger("coe.reload")

VERSION_CHARS = 12
# The [server] keys a reload applies (the per-tenant limits); the others are uvicorn's, fixed when
# it started.
RELOADABLE_SERVER_KEYS = frozenset(
    {
        "max_concurrent_requests_per_tenant",
        "max_requests_per_second_per_tenant",
        "fair_share_loop_lag_ms",
    }
)
RESTART_SECTIONS = ("server", "ledger", "telemetry")


class _EarlySighup:
    """Whether a SIGHUP came before the app could handle reloads (a worker still starting)."""

    came = False


_EARLY_SIGHUP = _EarlySighup()


def remember_sighup(_signum: int, _frame: object) -> None:
    """A worker's SIGHUP handler until its app handles reloads: the signal is kept, not lost, so
    a reload sent while a worker starts still reaches it (``take_early_sighup``). Only sets a
    flag: a signal handler must not take locks."""
    _EARLY_SIGHUP.came = True


def take_early_sighup() -> bool:
    """Whether a SIGHUP came before the app handled reloads, forgetting it."""
    came, _EARLY_SIGHUP.came = _EARLY_SIGHUP.came, False
    return came


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:VERSION_CHARS]


def settings_version(settings: Settings) -> str:
    """The version of settings built in code rather than read from a file."""
    return version_of(settings.model_dump_json().encode())


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the running config came from: its file, and the ``coe serve`` flags over it."""

    path: Path
    server_overrides: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> tuple[Settings, str]:
        """Read and validate the file as at start (``ConfigError`` lines); settings and version."""
        settings, data = read_config(self.path)
        if self.server_overrides:
            # Re-validated, so the loopback rule applies to an overridden host too.
            raw = settings.model_dump()
            raw["server"].update(self.server_overrides)
            settings = parse_settings(raw, source=str(self.path))
        return settings, version_of(data)


@dataclass(frozen=True, slots=True)
class Resources:
    """What every generation shares, opened once by the app's lifespan."""

    client: httpx.AsyncClient
    ledger: Ledger
    metrics: Metrics
    tracing: Tracing | None = None


@dataclass(eq=False, slots=True)
class Generation:
    version: str
    settings: Settings
    keyring: KeyRing
    biller: Biller
    budgets: BudgetGuard
    engine: CascadeEngine
    providers: Mapping[str, Provider]
    # Requests running on this generation, and whether a newer one has replaced it.
    active: int = 0
    retired: bool = False


def build_generation(
    settings: Settings, version: str, resources: Resources, previous: Generation | None = None
) -> Generation:
    """The objects ``settings`` decide; providers of unchanged endpoints come from ``previous``."""
    reused: dict[str, Provider] = {}
    if previous is not None:
        before = {e.name: e for e in previous.settings.endpoints}
        reused = {
            e.name: previous.providers[e.name]
            for e in settings.endpoints
            if before.get(e.name) == e and e.name in previous.providers
        }
    built = build_providers(
        [e for e in settings.endpoints if e.name not in reused],
        resources.client,
        on_breaker_change=resources.metrics.set_breaker_state,
    )
    providers = {e.name: reused.get(e.name) or built[e.name] for e in settings.endpoints}
    # GPU time is shared per server, not per endpoint name (EndpointConfig.gpu_meter_key).
    gpu_pools = {e.name: e.gpu_meter_key for e in settings.endpoints if e.gpu is not None}
    return Generation(
        version=version,
        settings=settings,
        keyring=KeyRing.from_settings(settings),
        biller=Biller(settings),
        budgets=BudgetGuard(settings, resources.ledger),
        engine=CascadeEngine(providers, gpu_pools, tracing=resources.tracing),
        providers=providers,
    )


class ConfigHolder:
    """The current generation, and the retired ones that still have requests in flight."""

    def __init__(self, first: Generation) -> None:
        self._current = first
        self._draining: set[Generation] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> Generation:
        return self._current

    @property
    def draining(self) -> int:
        """Retired generations still finishing requests."""
        return len(self._draining)

    @contextmanager
    def use(self) -> Iterator[Generation]:
        """The current generation, kept open (its providers unclosed) for the block."""
        generation = self._current
        generation.active += 1
        try:
            yield generation
        finally:
            generation.active -= 1
            if generation.retired and generation.active == 0:
                self._retire(generation)

    def swap(self, new: Generation) -> Generation:
        """Make ``new`` current; the previous one closes when its last request ends."""
        old, self._current = self._current, new
        old.retired = True
        if old.active == 0:
            self._retire(old)
        else:
            self._draining.add(old)
        return old

    def _retire(self, generation: Generation) -> None:
        self._draining.discard(generation)
        live = {id(p) for g in (self._current, *self._draining) for p in g.providers.values()}
        stale = [p for p in generation.providers.values() if id(p) not in live]
        if stale:
            task = asyncio.get_running_loop().create_task(_close_all(stale))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """At shutdown (requests drained): close every provider of every generation, once."""
        if self._closing:
            await asyncio.gather(*self._closing)
        providers = {
            id(p): p for g in (self._current, *self._draining) for p in g.providers.values()
        }
        await _close_all(list(providers.values()))


async def _close_all(providers: list[Provider]) -> None:
    for provider in providers:
        try:
            await provider.aclose()
        except Exception:  # one provider failing to close must not keep the others open
            log.exception("closing a provider of a retired config failed")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    version: str
    previous_version: str
    changed: bool
    restart_pending: tuple[str, ...] = ()


class Reloader:
    """Re-reads the config file and swaps the generation; one reload at a time."""

    def __init__(self, holder: ConfigHolder, resources: Resources, source: ConfigSource) -> None:
        self._holder = holder
        self._resources = resources
        self._source = source
        self._lock = anyio.Lock()

    async def reload(self) -> ReloadResult:
        """Raises ``ReloadRefused`` (the running config keeps serving) when the file does not
        load or changes what needs a restart."""
        async with self._lock:
            old = self._holder.current
            try:
                settings, version = await anyio.to_thread.run_sync(self._source.load)
                restart = needs_restart(old.settings, settings)
                if restart:
                    raise ReloadRefused(
                        f"{', '.join(restart)} changed: only a restart applies "
                        f"{'it' if len(restart) == 1 else 'them'}; the config was not reloaded",
                        code="restart_required",
                    )
                if version == old.version:
                    self._count("unchanged")
                    return ReloadResult(version, old.version, changed=False)
                new = build_generation(settings, version, self._resources, previous=old)
            except ReloadRefused as exc:
                self._refused(exc, old.version, "restart_required")
                raise
            except (ConfigError, ProviderError) as exc:
                refused = ReloadRefused(
                    f"the config was not reloaded:\n{exc.message}", code="config_invalid"
                )
                self._refused(refused, old.version, "invalid")
                raise refused from None
            self._holder.swap(new)
            self._resources.metrics.set_config_version(version)
            self._count("reloaded")
            log.info(
                "config reloaded",
                extra={"config_version": version, "previous_version": old.version},
            )
            return ReloadResult(version, old.version, changed=True)

    def _count(self, result: str) -> None:
        self._resources.metrics.config_reloads.labels(result).inc()

    def _refused(self, exc: ReloadRefused, serving: str, result: str) -> None:
        exc.message += f" (version {serving} keeps serving)"
        self._count(result)
        log.warning("config reload refused: %s", exc.message, extra={"config_version": serving})


def needs_restart(running: Settings, new: Settings) -> list[str]:
    """The keys that differ in the sections a reload cannot apply, e.g. ``['ledger.url']``."""
    changed: list[str] = []
    for section in RESTART_SECTIONS:
        before = getattr(running, section).model_dump()
        after = getattr(new, section).model_dump()
        for key in sorted(before.keys() | after.keys()):
            if section == "server" and key in RELOADABLE_SERVER_KEYS:
                continue
            if before.get(key) != after.get(key):
                changed.append(f"{section}.{key}")
    return changed
