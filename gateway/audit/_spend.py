"""Each route's serving and audit spend, kept in memory, for ``max_share_of_spend``.

Seeded from the ledger at start (every route's sums over the whole ledger) and then added to as
this process serves and audits: no query on the request path. With several workers or replicas
each adds only its own traffic to the common seed, so each sees about the same ratio; an audit
already running when the share is passed still finishes, so the share can be passed by at most
the audits in flight.
"""

from __future__ import annotations


class SpendShares:
    __slots__ = ("_audit", "_serving")

    def __init__(self, seed: dict[str, tuple[float, float]] | None = None) -> None:
        self._serving: dict[str, float] = {}
        self._audit: dict[str, float] = {}
        for route, (serving, audit) in (seed or {}).items():
            self._serving[route] = serving
            self._audit[route] = audit

    def served(self, route: str, usd: float) -> None:
        self._serving[route] = self._serving.get(route, 0.0) + usd

    def audited(self, route: str, usd: float) -> None:
        self._audit[route] = self._audit.get(route, 0.0) + usd

    def paused(self, route: str, max_share: float) -> bool:
        """Whether the route's audit spend is past ``max_share`` of its serving spend."""
        return self._audit.get(route, 0.0) > max_share * self._serving.get(route, 0.0)
