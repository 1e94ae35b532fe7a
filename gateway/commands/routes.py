"""``coe routes --config FILE``: the routes clients can name, with their tiers, θ and prices."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from gateway.config import load_settings

if TYPE_CHECKING:
    import argparse

    from gateway.config import RouteConfig, Settings
    from providers.endpoint import EndpointConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "routes", help="list the routes of a config file", description=__doc__
    )
    parser.add_argument("--config", required=True, help="the TOML config file")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.format == "json":
        sys.stdout.write(json.dumps(route_rows(settings), indent=2, ensure_ascii=False) + "\n")
    else:
        Console().print(routes_table(settings))
    return 0


def price(endpoint: EndpointConfig, settings: Settings) -> str:
    """How an endpoint is priced, in words: per GPU-hour, per million tokens, or free."""
    if endpoint.gpu is not None:
        hourly = settings.pricing.gpu_hour_usd[endpoint.gpu]
        return f"{endpoint.gpus}× {endpoint.gpu} @ {_usd(hourly)}/GPU-h"
    if endpoint.usd_per_mtok_in or endpoint.usd_per_mtok_out:
        return (
            f"{_usd(endpoint.usd_per_mtok_in)} in / {_usd(endpoint.usd_per_mtok_out)} out per Mtok"
        )
    return "free"


def _usd(amount: float) -> str:
    # Cents when they say it all, every significant digit when they don't ($0.015).
    return f"${amount:.2f}" if round(amount, 2) == amount else f"${amount:g}"


def answers(route: RouteConfig) -> str:
    if route.task == "regex":
        return f"/{route.pattern}/"
    return ", ".join(route.answer_set) or "(free text)"


def route_rows(settings: Settings) -> list[dict[str, Any]]:
    """The resolved routes as plain data: one entry per route, one per tier inside it."""
    return [
        {
            "route": name,
            "task": route.task,
            "answers": list(route.answer_set),
            "threshold": route.threshold,
            "policy": route.policy,
            "deadline_s": route.deadline_s,
            "tiers": [
                [_endpoint_row(settings.endpoint(e), settings) for e in tier]
                for tier in route.tiers
            ],
        }
        for name, route in settings.routes.items()
    ]


def _endpoint_row(endpoint: EndpointConfig, settings: Settings) -> dict[str, Any]:
    row: dict[str, Any] = {"endpoint": endpoint.name, "price": price(endpoint, settings)}
    if endpoint.gpu is not None:
        row.update(
            gpu=endpoint.gpu,
            gpus=endpoint.gpus,
            gpu_hour_usd=settings.pricing.gpu_hour_usd[endpoint.gpu],
        )
    else:
        row.update(
            usd_per_mtok_in=endpoint.usd_per_mtok_in, usd_per_mtok_out=endpoint.usd_per_mtok_out
        )
    return row


def routes_table(settings: Settings) -> Table:
    table = Table(title="Routes", show_lines=True)
    for column in ("route", "task", "answers", "θ", "policy", "tier", "endpoints", "price"):
        table.add_column(column, overflow="fold")
    for name, route in settings.routes.items():
        for index, tier in enumerate(route.tiers):
            first = index == 0
            table.add_row(
                name if first else "",
                route.task if first else "",
                answers(route) if first else "",
                f"{route.threshold:.3g}" if first else "",
                route.policy if first else "",
                str(index),
                "\n".join(tier),
                "\n".join(price(settings.endpoint(e), settings) for e in tier),
            )
    return table
