"""API keys to tenants: who is asking, and whether they may see every tenant.

Keys are never held: the config lists the sha256 of each key, and a presented key is hashed and
compared, digest against digest, with ``hmac.compare_digest``. With no ``[[tenants]]`` configured
the gateway has no authentication and everyone is tenant ``default``; an ``[admin]`` key still
makes its bearer an admin then. An admin key that no tenant holds acts as tenant ``admin``: its own
requests are recorded under that name, and its reports may name any tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config import ADMIN_TENANT
from gateway.errors import TooManyRequests, Unauthorized

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from gateway.config import Settings

DEFAULT_TENANT = "default"
KEY_PREFIX = "sk-coe-"
# A tenant that asked within this many seconds has a share of a contended gateway, even with
# nothing in flight at the moment (a steady 10 requests a second of 30 ms is mostly at zero).
ACTIVE_S = 1.0


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    is_admin: bool


def key_digest(key: str) -> str:
    """The lowercase hex sha256 of a key, as ``api_key_sha256`` lists it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key (256 bits) and its sha256 hex digest."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key_digest(key)


class KeyRing:
    """Maps a request's ``Authorization`` header to a ``Principal``."""

    def __init__(self, tenant_digests: dict[str, str], admin_digests: frozenset[str]) -> None:
        self._tenant_digests = tuple(tenant_digests.items())
        self._admin_digests = tuple(sorted(admin_digests))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        tenant_digests = {d: t.name for t in settings.tenants for d in t.api_key_sha256}
        return cls(tenant_digests, frozenset(settings.admin.api_key_sha256))

    @property
    def requires_key(self) -> bool:
        return bool(self._tenant_digests)

    @property
    def has_admins(self) -> bool:
        return bool(self._admin_digests)

    def authenticate(self, authorization: str | None) -> Principal:
        key = _bearer_key(authorization)
        if not key:
            if not self.requires_key:
                return Principal(DEFAULT_TENANT, is_admin=False)
            if key is None:
                raise Unauthorized("an API key is required: send 'Authorization: Bearer KEY'")
            raise Unauthorized("the Authorization header must read 'Bearer KEY'")
        digest = key_digest(key)
        tenant = self._tenant_for(digest)
        is_admin = _holds(self._admin_digests, digest)
        if tenant is not None:
            return Principal(tenant, is_admin=is_admin)
        if is_admin:
            return Principal(ADMIN_TENANT, is_admin=True)
        if self.requires_key:
            # The message never repeats the key: it could be a secret pasted in the wrong place.
            raise Unauthorized("the API key is not valid for this gateway")
        # Without tenants any key is accepted: OpenAI clients insist on sending one.
        return Principal(DEFAULT_TENANT, is_admin=False)

    def _tenant_for(self, digest: str) -> str | None:
        found: str | None = None
        # Every entry is compared, so the time taken does not depend on which one matches.
        for candidate, tenant in self._tenant_digests:
            if hmac.compare_digest(candidate, digest):
                found = tenant
        return found


class TenantLimiter:
    """Per-tenant limits: requests in flight (``server.max_concurrent_requests_per_tenant``),
    requests a second (``server.max_requests_per_second_per_tenant``) and, while the event loop is
    contended (``gateway.contention``), a fair share of the requests in flight.

    A concurrency limit alone lets a tenant whose requests are quick take most of the CPU, and a
    rate limit must be guessed per deployment; the fair share needs neither: while the loop is
    late, a tenant holding more than its equal share of the requests in flight among the tenants
    active in the last ``ACTIVE_S`` is refused, so the others' requests are not queued behind its
    flood. One counter per tenant with requests in flight (dropped at zero, so the table stays as
    small as the tenants active now), one token bucket per tenant that has been rate limited and
    one last-request time per tenant (both as many as the configured tenants). All outlive config
    reloads: a new limit applies from the next request. The event loop is the only thread that
    touches them.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._in_flight: dict[str, int] = {}
        # tenant -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        # tenant -> when it last asked (admitted or not): who counts as active for a fair share
        self._asked: dict[str, float] = {}
        self._clock = clock

    def in_flight(self, tenant: str) -> int:
        return self._in_flight.get(tenant, 0)

    @contextmanager
    def hold(self, tenant: str, limit: int, *, contended: bool = False) -> Iterator[None]:
        """Count one request of ``tenant`` for the block; past ``limit`` (0: none) raise 429, and
        while ``contended`` raise 429 too if the tenant holds more than its fair share."""
        count = self._in_flight.get(tenant, 0)
        self._asked[tenant] = self._clock()
        if limit and count >= limit:
            raise TooManyRequests(
                f"tenant {tenant!r} already has {count} requests in flight, the most this gateway "
                f"allows one tenant (server.max_concurrent_requests_per_tenant); retry when one "
                "finishes"
            )
        if contended:
            self._check_fair_share(tenant, count)
        self._in_flight[tenant] = count + 1
        try:
            yield
        finally:
            remaining = self._in_flight[tenant] - 1
            if remaining:
                self._in_flight[tenant] = remaining
            else:
                del self._in_flight[tenant]

    def _check_fair_share(self, tenant: str, count: int) -> None:
        """Max-min fairness of requests in flight: each tenant active in the last ``ACTIVE_S``
        (one that asked, admitted or not, or still has requests in flight) is entitled to an equal
        share of all requests in flight. A tenant over it is refused; one at or under it, which
        includes any tenant with nothing in flight, is not, so equal tenants are never refused
        and a lone tenant never is."""
        since = self._clock() - ACTIVE_S
        quiet = [t for t, at in self._asked.items() if at < since and t not in self._in_flight]
        for gone in quiet:
            del self._asked[gone]
        active = len(self._asked)  # every tenant in flight asked, and is kept above
        total = sum(self._in_flight.values())
        if count * active > total:
            raise TooManyRequests(
                f"this gateway is contended and tenant {tenant!r} has {count} of the {total} "
                f"requests in flight, more than its fair share among {active} active tenants "
                "(server.fair_share_loop_lag_ms); retry shortly"
            )

    def admit(self, tenant: str, rate: float) -> None:
        """Take one of ``tenant``'s tokens: a bucket refilled at ``rate`` a second (0: no limit)
        that holds one second's worth (at least one), so a burst of ``rate`` requests passes at
        once. With no token left raise 429, whose ``Retry-After`` is the wait for the next one
        (whole seconds, at least 1). A refused request takes no token."""
        if not rate:
            return
        now = self._clock()
        burst = max(rate, 1.0)
        tokens, counted_at = self._buckets.get(tenant, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - counted_at) * rate)
        if tokens < 1:
            self._buckets[tenant] = (tokens, now)
            refused = TooManyRequests(
                f"tenant {tenant!r} is past {rate:g} requests a second, the most this gateway "
                "allows one tenant (server.max_requests_per_second_per_tenant); retry later"
            )
            refused.retry_after_s = max(1, math.ceil((1 - tokens) / rate))
            raise refused
        self._buckets[tenant] = (tokens - 1, now)


def _holds(digests: tuple[str, ...], digest: str) -> bool:
    found = False
    for candidate in digests:
        found |= hmac.compare_digest(candidate, digest)
    return found


def _bearer_key(authorization: str | None) -> str | None:
    """The bearer key; None when there is no header, "" when the header is not a bearer key."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return key.strip()
