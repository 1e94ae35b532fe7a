"""``coe audit``: a route's live-audit report, read straight from the ledger the config names
(docs/api.md, "Audit"). ``--json`` prints the shape of ``GET /v1/coe/audit``."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from gateway.audit import audited, route_audit_report
from gateway.commands._ledger_reports import print_json, read_report
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.reports import parse_time

if TYPE_CHECKING:
    import argparse

    from gateway.config import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="print the live quality audit's report from the ledger",
        description=(
            "Print how often answers given below a route's top tier agree with the top tier, per "
            "exit tier and vote pattern: audited n, agreement with its 95% Clopper-Pearson "
            "interval, the estimated accuracy gap against top-tier-only service, and the audit's "
            "cost. Read from the ledger named by the config's [ledger] url. Times are ISO 8601 "
            "(UTC unless an offset is given); since is inclusive, until exclusive."
        ),
    )
    parser.add_argument("--config", required=True, help="the gateway's TOML config file")
    parser.add_argument(
        "--route", help="the route (default: the config's one route with [routes.NAME.audit])"
    )
    parser.add_argument("--tenant", help="one tenant's traffic (default: every tenant's)")
    parser.add_argument("--since", help="from this date or time, e.g. 2025-01-01")
    parser.add_argument("--until", help="up to (not including) this date or time")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    route = args.route or _only_audited_route(settings, args.config)
    since = parse_time(args.since, "--since")
    until = parse_time(args.until, "--until")
    report = read_report(
        settings,
        args.config,
        partial(route_audit_report, route=route, tenant=args.tenant, since=since, until=until),
    )
    if args.json:
        print_json(report)
    else:
        print_table(report, args.tenant, Console())
    return 0


def _only_audited_route(settings: Settings, path: str) -> str:
    names = [name for name, route in settings.routes.items() if audited(route)]
    if len(names) != 1:
        listed = ", ".join(names) or "none"
        raise ConfigError(f"{path}: name the route with --route (audited routes: {listed})")
    return names[0]


def print_table(report: dict[str, Any], tenant: str | None, console: Console) -> None:
    window = f"{report['since'] or 'start'} to {report['until'] or 'now'}"
    who = f"tenant {tenant}" if tenant else "all tenants"
    table = Table(
        title=f"Audit of route {report['route']}, {who}, {window}: "
        f"audit cost ${report['audit_cost_usd']:.6f}"
    )
    for name in ("tier", "votes", "kind", "audited", "agreed", "agreement", "95% interval",
                 "traffic share", "gap", "gap 95% interval"):
        table.add_column(name, justify="left" if name in ("votes", "kind") else "right")
    for row in report["patterns"]:
        table.add_row(
            str(row["tier"]),
            row["votes"],
            row["kind"],
            str(row["audited"]),
            str(row["agreed"]),
            _ratio(row["agreement"]),
            _interval(row["ci95"]),
            _ratio(row["traffic_share"]),
            _ratio(row["gap"]),
            _interval(row["gap_ci95"]),
        )
    console.print(table)
    if not report["patterns"]:
        console.print("no audited requests in this window")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _interval(bounds: list[float]) -> str:
    return f"{bounds[0]:.2%} – {bounds[1]:.2%}"
