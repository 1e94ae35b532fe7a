"""The package's public names: sorted, and each one resolves."""

from __future__ import annotations

import providers


def test_all_is_sorted() -> None:
    assert providers.__all__ == sorted(providers.__all__)


def test_all_resolves() -> None:
    for name in providers.__all__:
        assert getattr(providers, name) is not None, name
