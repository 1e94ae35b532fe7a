"""``coe check-config FILE``: validate a config and print what it resolves to.

Exits 0 when the file is valid (warnings included), 2 with the problem (file, key path, what is
wrong) when it is not.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from gateway.commands.routes import price, routes_table
from gateway.config import load_settings

if TYPE_CHECKING:
    import argparse

    from gateway.config import Settings

_URL_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]+@")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check-config", help="validate a config file and print it resolved", description=__doc__
    )
    parser.add_argument("file", metavar="FILE", help="the TOML config file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    console = Console()
    console.print(server_table(settings))
    console.print(endpoints_table(settings))
    console.print(routes_table(settings))
    for warning in warnings(settings):
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    console.print(
        f"[green]ok[/green]: {args.file} is valid: {len(settings.endpoints)} endpoints, "
        f"{len(settings.routes)} routes, {len(settings.tenants)} tenants",
        highlight=False,
    )
    return 0


def redact_url(url: str) -> str:
    """A ledger URL with any password replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def server_table(settings: Settings) -> Table:
    table = Table(title="Server", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    server = settings.server
    table.add_row("bind", f"{server.host}:{server.port}")
    table.add_row("ledger", redact_url(settings.ledger.url))
    if settings.tenants:
        tenants = ", ".join(
            t.name + (f" (budget ${t.budget_usd:g}/month)" if t.budget_usd is not None else "")
            for t in settings.tenants
        )
    else:
        tenants = "none: no authentication, tenant 'default'"
    table.add_row("tenants", tenants)
    table.add_row("admin keys", str(len(settings.admin.api_key_sha256)))
    return table


def endpoints_table(settings: Settings) -> Table:
    table = Table(title="Endpoints")
    for column in ("endpoint", "kind", "target", "timeout", "concurrency", "price"):
        table.add_column(column, overflow="fold")
    for e in settings.endpoints:
        if e.kind == "python":
            target = e.function or ""
        elif e.kind == "replay":
            target = e.recording or ""
        else:
            target = f"{e.model} @ {e.base_url}"
        table.add_row(
            e.name, e.kind, target, f"{e.timeout_s:g}s", str(e.max_concurrency), price(e, settings)
        )
    return table


def warnings(settings: Settings) -> list[str]:
    """What is valid but probably not meant: unused endpoints, key variables not set here."""
    used = {name for route in settings.routes.values() for tier in route.tiers for name in tier}
    found = [
        f"endpoint {e.name!r} is in no route's tiers"
        for e in settings.endpoints
        if e.name not in used
    ]
    found += [
        f"endpoint {e.name!r}: environment variable {e.api_key_env} is not set in this shell"
        for e in settings.endpoints
        if e.api_key_env and e.api_key_env not in os.environ
    ]
    return found
