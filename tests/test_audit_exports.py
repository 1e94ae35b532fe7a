"""gateway.audit re-exports a sorted __all__ of names that resolve: what the app, the CLI and the
tests use, and nothing else."""

from __future__ import annotations

import gateway.audit


def test_all_is_sorted_unique_and_resolves() -> None:
    assert list(gateway.audit.__all__) == sorted(set(gateway.audit.__all__))
    for name in gateway.audit.__all__:
        assert getattr(gateway.audit, name) is not None, name
