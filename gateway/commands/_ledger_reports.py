"""What ``coe report`` and ``coe audit`` share: a report read from the ledger the config names,
printed as JSON in the HTTP endpoints' shape."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from gateway.errors import ConfigError
from gateway.ledger import SQLITE_PREFIX, open_ledger, sqlite_path

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from gateway.config import Settings
    from gateway.ledger import Ledger


def read_report(
    settings: Settings, config_path: str, read: Callable[[Ledger], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """``read`` run on the config's ledger. A SQLite file that is not there is refused: opening it
    would create an empty ledger and report nothing as if that were the truth."""
    url = settings.ledger.url
    if url.startswith(SQLITE_PREFIX) and not sqlite_path(url).exists():
        raise ConfigError(f"{config_path}: ledger.url: no ledger at {str(sqlite_path(url))!r}")

    async def run() -> dict[str, Any]:
        async with open_ledger(settings.ledger) as ledger:
            return await read(ledger)

    return anyio.run(run)


def print_json(report: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
