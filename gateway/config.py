"""The gateway's configuration: one TOML file parsed once, at start, into immutable models.

Every table and key here is mirrored, with its meaning, in ``config.example.toml``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError
from policies.answers import AnswerSpec
from policies.threshold import parse_threshold
from providers.endpoint import EndpointConfig

Task = Literal["classify", "choice", "number", "regex", "text"]
PolicyName = Literal["vote", "confidence"]

# An [admin] key's own completions are billed to this tenant name, which no [[tenants]] may take.
ADMIN_TENANT = "admin"

# The seed paper's Table 1 (Lambda Cloud on-demand prices, 2024).
DEFAULT_GPU_HOUR_USD: dict[str, float] = {"V100": 0.50, "A6000": 0.80, "A100": 1.29, "H100": 2.49}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _threshold(value: Any) -> float:
    if not isinstance(value, str | int | float):
        raise ValueError("threshold must be a number or a fraction such as 2/3")
    return parse_threshold(value)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Without tenants the gateway has no authentication; it then binds to loopback only unless
    # the operator says, here, that the network in front of it does the authenticating.
    allow_unauthenticated_public_bind: bool = False
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    # On SIGTERM: how long in-flight requests may take to finish before they are cancelled. Above
    # the longest route deadline_s, every request ends on its own (a 504 is recorded; a cancelled
    # request's calls are not).
    drain_timeout_s: float = Field(default=65.0, gt=0)
    # Worker processes serving the one port (gateway.serve): 1 serves in this process, 0 starts
    # one per core (os.cpu_count()). Breakers, GPU-share meters and per-tenant limits are per
    # worker; budgets (the ledger) and /metrics (summed) are not.
    workers: int = Field(default=1, ge=0)
    # Abusive clients (gateway.serve). A connection whose request line and headers are not all in
    # within header_timeout_s is closed (slowloris); an idle keep-alive connection is closed after
    # keepalive_timeout_s; past max_connections open connections (or requests in flight) uvicorn
    # answers 503 until some close. Keep max_connections under the process's open-file limit.
    header_timeout_s: float = Field(default=10.0, gt=0)
    keepalive_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    # Requests one tenant may have in flight at once; past it, 429 rate_limit_exceeded with a
    # Retry-After. 0: no limit. Applies to keyed tenants (and admin keys), not to the anonymous
    # tenant of a gateway without [[tenants]]. A reload applies it (and the two below).
    max_concurrent_requests_per_tenant: int = Field(default=256, ge=0)
    # Requests one tenant may start a second (a token bucket holding one second's worth); past
    # it, 429 rate_limit_exceeded with a Retry-After. 0: no limit. Keyed tenants only, as above.
    max_requests_per_second_per_tenant: float = Field(default=0.0, ge=0)
    # Fair shares while the event loop is contended (gateway.contention): a timer that fires more
    # than this late makes the gateway, for the next second, refuse (429 rate_limit_exceeded) new
    # requests of any tenant holding more than an equal share of the requests in flight among the
    # tenants active in the last second. 0: off. Keyed tenants only, as above; reloadable.
    fair_share_loop_lag_ms: float = Field(default=20.0, ge=0)


class LedgerConfig(_Model):
    url: str = "sqlite:///coe.db"
    batch_max_rows: int = Field(default=500, gt=0)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url


class PricingConfig(_Model):
    gpu_hour_usd: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GPU_HOUR_USD))

    @field_validator("gpu_hour_usd")
    @classmethod
    def _merge_defaults(cls, table: dict[str, float]) -> dict[str, float]:
        if any(price < 0 for price in table.values()):
            raise ValueError("prices must not be negative")
        return {**DEFAULT_GPU_HOUR_USD, **table}


class AuditConfig(_Model):
    """``[routes.NAME.audit]``: the live quality audit (gateway.audit, docs/api.md "Audit")."""

    # The share of requests answered below the top tier that are, after their answer is sent,
    # also sent to the route's top tier in the background.
    rate: float = Field(default=0.05, ge=0, le=1)
    # Audits running at once in one process; one more is dropped and counted, never queued.
    max_in_flight: int = Field(default=16, gt=0)
    # Audit spend as a share of the route's serving spend; past it, sampling pauses.
    max_share_of_spend: float = Field(default=0.1, ge=0)
    # Who pays for an audit: the request's tenant (its budget, its bill) or the operator (billed
    # to the reserved tenant "admin").
    bill_to: Literal["tenant", "operator"] = "operator"


_LIVE_ONLY_ROUTE_KEYS = frozenset(
    {
        "audit", "target_agreement", "confidence", "min_samples", "thresholds",
        "refresh_interval_s", "evidence_window",
    }
)


class RouteConfig(_Model):
    task: Task = "classify"
    labels: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    threshold: float = 0.66
    policy: PolicyName = "vote"
    tiers: tuple[tuple[str, ...], ...]
    wait_for_all: bool = False
    max_tokens: int = Field(default=16, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    deadline_s: float = Field(default=60.0, gt=0)
    text_similarity: float = Field(default=0.8, gt=0, le=1)
    audit: AuditConfig | None = None
    # θ from a target (gateway.audit): serve with the loosest θ of ``thresholds`` whose audited
    # agreement with the top tier has a lower bound at ``confidence`` ≥ ``target_agreement``;
    # the strictest of them until ``min_samples`` are in. Replaces ``threshold`` when set.
    target_agreement: float | None = Field(default=None, gt=0, le=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    min_samples: int = Field(default=200, ge=1)
    thresholds: tuple[float, ...] = ()
    # How often θ is re-chosen, on wall-clock multiples so every replica reads the same rows, and
    # how many of the latest audited requests per vote pattern and kind judge it.
    refresh_interval_s: float = Field(default=30.0, gt=0)
    evidence_window: int = Field(default=2000, ge=1)

    @field_validator("threshold", mode="before")
    @classmethod
    def _parse_threshold(cls, value: Any) -> float:
        return _threshold(value)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError('thresholds must be a list of θ values such as ["2/3", 1]')
        return tuple(_threshold(item) for item in value)

    @model_validator(mode="after")
    def _task_needs(self) -> RouteConfig:
        if not self.tiers:
            raise ValueError("tiers must hold at least one tier")
        for index, tier in enumerate(self.tiers):
            if not tier:
                raise ValueError(f"tier {index} is empty")
            if len(set(tier)) != len(tier):
                raise ValueError(f"tier {index} names an endpoint twice")
        if self.task == "classify" and not self.labels:
            raise ValueError("task 'classify' needs labels = [...]")
        if self.task == "regex" and not self.pattern:
            raise ValueError("task 'regex' needs pattern = '...'")
        if self.target_agreement is not None:
            if not self.thresholds:
                raise ValueError('target_agreement needs thresholds = [...], the θ values allowed')
            if len(self.tiers) < 2:
                raise ValueError("target_agreement needs at least two tiers: a top tier to audit")
            if self.audit is None or self.audit.rate == 0:
                # At a loose θ only random samples see the patterns it accepts (census sees those
                # that escalate): without them θ could never stay loosened.
                raise ValueError("target_agreement needs [routes.NAME.audit] with rate > 0")
            if self.evidence_window < self.min_samples:
                raise ValueError("evidence_window must hold at least min_samples audited requests")
        elif self.thresholds:
            raise ValueError("thresholds are the θ values target_agreement may choose: set it")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {exc}") from None
        return self

    def recorded(self) -> dict[str, Any]:
        """The route as a recording's header stores it (``coe eval record``): its cascade, without
        the live audit's and θ controller's keys, which a full-information run has no use for."""
        return self.model_dump(mode="json", exclude=set(_LIVE_ONLY_ROUTE_KEYS))

    @property
    def answer_set(self) -> tuple[str, ...]:
        """The closed set of answers, when the task has one."""
        if self.task == "classify":
            return self.labels
        if self.task == "choice":
            return self.choices or ("A", "B", "C", "D")
        return ()

    @property
    def spec(self) -> AnswerSpec:
        """How the route's answers are read, before any per-request override."""
        return AnswerSpec(
            task=self.task,
            labels=self.answer_set,
            pattern=self.pattern,
            text_similarity=self.text_similarity,
        )


class TenantConfig(_Model):
    name: str = Field(min_length=1)
    api_key_sha256: tuple[str, ...] = ()
    budget_usd: float | None = Field(default=None, ge=0)

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, digests: tuple[str, ...]) -> tuple[str, ...]:
        return _check_digests(digests)


class AdminConfig(_Model):
    api_key_sha256: tuple[str, ...] = ()

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, digests: tuple[str, ...]) -> tuple[str, ...]:
        return _check_digests(digests)


class TelemetryConfig(_Model):
    """OpenTelemetry traces (gateway.telemetry); the standard ``OTEL_*`` variables win."""

    # The OTLP/HTTP collector's root (as OTEL_EXPORTER_OTLP_ENDPOINT: /v1/traces is added);
    # tracing is on when this or an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variable is set.
    otlp_endpoint: str | None = None
    service_name: str = Field(default="coe-gateway", min_length=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url


def _check_digests(digests: tuple[str, ...]) -> tuple[str, ...]:
    for digest in digests:
        if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError("each entry must be the 64-character hex sha256 of a key")
    return tuple(d.lower() for d in digests)


class Settings(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    endpoints: tuple[EndpointConfig, ...] = ()
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    tenants: tuple[TenantConfig, ...] = ()
    admin: AdminConfig = Field(default_factory=AdminConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        names = [e.name for e in self.endpoints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate endpoint names: {', '.join(duplicates)}")
        tenant_names = [t.name for t in self.tenants]
        if ADMIN_TENANT in tenant_names:
            raise ValueError(
                f"tenant name {ADMIN_TENANT!r} is reserved: an [admin] key's own requests bill it"
            )
        dup_tenants = sorted({n for n in tenant_names if tenant_names.count(n) > 1})
        if dup_tenants:
            raise ValueError(f"duplicate tenant names: {', '.join(dup_tenants)}")
        digests = [d for t in self.tenants for d in t.api_key_sha256]
        if len(set(digests)) != len(digests):
            raise ValueError("one api_key_sha256 is given to two tenants")
        known = set(names)
        for route_name, route in self.routes.items():
            for tier in route.tiers:
                for member in tier:
                    if member not in known:
                        raise ValueError(f"route {route_name!r} names unknown endpoint {member!r}")
        for endpoint in self.endpoints:
            if endpoint.gpu is not None and endpoint.gpu not in self.pricing.gpu_hour_usd:
                raise ValueError(
                    f"endpoint {endpoint.name!r}: gpu {endpoint.gpu!r} has no price in "
                    "[pricing.gpu_hour_usd]"
                )
        if not self.tenants and not self.server.allow_unauthenticated_public_bind:
            if not _is_loopback(self.server.host):
                raise ValueError(
                    f"server.host {self.server.host!r} is not loopback and no [[tenants]] are "
                    "configured; add tenants or set server.allow_unauthenticated_public_bind"
                )
        return self

    def endpoint(self, name: str) -> EndpointConfig:
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise KeyError(name)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file; a problem raises ConfigError naming file and key."""
    return read_config(path)[0]


def read_config(path: str | Path) -> tuple[Settings, bytes]:
    """``load_settings``, also returning the exact bytes read (a reload's version is their hash)."""
    file = Path(path)
    try:
        data = file.read_bytes()
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_settings(raw, source=str(file)), data


def parse_settings(raw: dict[str, Any], source: str = "<config>") -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = _key_path(error["loc"], raw)
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {where or '(top level)'}: {message}")
        raise ConfigError("\n".join(problems)) from None


def _key_path(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """Turn pydantic's location into the TOML key path a user sees, e.g. endpoints[1].timeout_s."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
            continue
        if isinstance(node, dict) and item in node:
            node = node[item]
        elif isinstance(node, dict):
            node = None
        parts.append(item)
    return ".".join(parts)
