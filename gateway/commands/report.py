"""``coe report``: the cost report, read straight from the ledger the config names.

``--format json`` prints the shape of docs/api.md, "Cost report" (as ``GET /v1/coe/costs`` does,
for every tenant unless ``--tenant``); ``csv`` prints the groups, one row each; ``table`` prints
it all with rich.
"""

from __future__ import annotations

import csv
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from gateway.commands._ledger_reports import print_json, read_report
from gateway.config import load_settings
from gateway.ledger import GROUP_BYS
from gateway.reports import cost_report, parse_time

if TYPE_CHECKING:
    import argparse

FORMATS = ("table", "json", "csv")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="print the cost report from the ledger",
        description=(
            "Print what requests cost, read from the ledger named by the config's [ledger] url: "
            "totals, exits per tier, groups, and what the top tier alone would have cost. "
            "Times are ISO 8601 (UTC unless an offset is given); since is inclusive, until "
            "exclusive."
        ),
    )
    parser.add_argument("--config", required=True, help="the gateway's TOML config file")
    parser.add_argument("--tenant", help="one tenant's costs (default: every tenant)")
    parser.add_argument("--since", help="from this date or time, e.g. 2025-01-01")
    parser.add_argument("--until", help="up to (not including) this date or time")
    parser.add_argument("--group-by", choices=GROUP_BYS, default="route")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    since = parse_time(args.since, "--since")
    until = parse_time(args.until, "--until")
    report = read_report(
        settings,
        args.config,
        partial(cost_report, tenant=args.tenant, since=since, until=until, group_by=args.group_by),
    )
    if args.format == "json":
        print_json(report)
    elif args.format == "csv":
        write_csv(report)
    else:
        print_table(report, Console())
    return 0


def write_csv(report: dict[str, Any]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([report["group_by"], "requests", "calls", "cost_usd"])
    for group in report["groups"]:
        writer.writerow(
            [group["key"], group["requests"], group["calls"], f"{group['cost_usd']:.10f}"]
        )


def print_table(report: dict[str, Any], console: Console) -> None:
    who = report["tenant"] or "all tenants"
    window = f"{report['since'] or 'start'} to {report['until'] or 'now'}"
    totals = report["totals"]
    counterfactual = report["counterfactual"]
    summary = Table(title=f"Costs of {who}, {window}", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("requests", str(totals["requests"]))
    summary.add_row("upstream calls", str(totals["calls"]))
    summary.add_row("serving cost (USD)", f"{totals['cost_usd']:.6f}")
    audit = report.get("audit") or {}
    summary.add_row(
        "audit cost (USD)", f"{audit.get('cost_usd', 0.0):.6f} ({audit.get('requests', 0)} audits)"
    )
    summary.add_row("top tier alone (USD)", f"{counterfactual['top_tier_only_cost_usd']:.6f}")
    summary.add_row("savings", f"{counterfactual['savings_ratio']:.1%}")
    summary.add_row("tokens in / out", f"{totals['tokens_in']} / {totals['tokens_out']}")
    summary.add_row("GPU seconds", f"{totals['gpu_seconds']:.1f}")
    for tier, count in report["exits_by_tier"].items():
        summary.add_row(f"answered at tier {tier}", str(count))
    reserved = report.get("reserved") or {}
    if reserved.get("requests"):
        summary.add_row(
            "reserved, unsettled (USD)",
            f"{reserved['cost_usd']:.6f} ({reserved['requests']} requests)",
        )
    console.print(summary)

    groups = Table(title=f"By {report['group_by']}")
    groups.add_column(report["group_by"])
    for name in ("requests", "calls", "cost (USD)"):
        groups.add_column(name, justify="right")
    for group in report["groups"]:
        groups.add_row(
            group["key"] or "(untagged)",
            str(group["requests"]),
            str(group["calls"]),
            f"{group['cost_usd']:.6f}",
        )
    console.print(groups)

    if report["hourly_usd"]:
        hourly = Table(title="GPU-hour prices (USD per hour)")
        for name in ("route", "per tier", "blended", "top tier alone"):
            hourly.add_column(name, justify="left" if name == "route" else "right")
        for route, rates in report["hourly_usd"].items():
            per_tier = "  ".join(f"{t}: {r:.2f}" for t, r in rates["by_tier"].items())
            blended = "-" if rates["blended"] is None else f"{rates['blended']:.2f}"
            top = "-" if rates["top_tier_only"] is None else f"{rates['top_tier_only']:.2f}"
            hourly.add_row(route, per_tier, blended, top)
        console.print(hourly)
