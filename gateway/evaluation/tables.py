"""How a replay report is shown: the JSON rows of docs/api.md ("coe eval replay --format json"),
a rich table, the recommended route config as TOML."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.table import Table

from gateway.evaluation.recording import route_config
from gateway.evaluation.replay import fraction_text

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.config import RouteConfig
    from gateway.evaluation.replay import CascadeConfig, ReplayReport, Row
    from providers.recording import RecordingHeader


def report_json(report: ReplayReport) -> list[dict[str, Any]]:
    """The rows of docs/api.md, "coe eval replay --format json", each with ``cost_estimated``
    (the recording has no token counts: costs are priced on tokens estimated from text length);
    rows under a network delay add ``tier_delay_ms`` (only then)."""
    estimated = {"cost_estimated": report.estimated}
    rows = [{**row.contract_json(), **estimated} for row in report.rows]
    for delay, delayed in report.delayed.items():
        rows += [{**row.contract_json(), **estimated, "tier_delay_ms": delay} for row in delayed]
    return rows


def top_tier_row(report: ReplayReport, header: RecordingHeader) -> Row:
    """The route's top tier called alone: its single model, or its whole-tier ensemble."""
    top = header.tiers[-1]
    wanted = "single" if len(top) == 1 else "ensemble"
    return next(
        row for row in report.rows if row.config.kind == wanted and row.config.tiers == (top,)
    )


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:.3g}" if value else "$0"


def print_report(report: ReplayReport, header: RecordingHeader, console: Console) -> None:
    top = top_tier_row(report, header)
    table = Table(
        title=f"Replay of route {header.route_name!r} over {report.examples} examples",
        caption="★ Pareto frontier (no row is both more accurate and cheaper) · "
        "exits: fraction answered at each tier · $/h: the seed paper's Table 2 column"
        + (" · $ estimated: no token counts were recorded, tokens are estimated from text length"
           if report.estimated else ""),
    )
    for column, justify in (
        ("config", "left"), ("kind", "left"), ("θ", "right"), ("accuracy", "right"),
        ("$/request", "right"), ("vs top tier", "right"), ("mean ms", "right"),
        ("p95 ms", "right"), ("exits", "right"), ("$/h", "right"), ("", "center"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        relative = _share(row.cost_per_request_usd, top.cost_per_request_usd)
        table.add_row(
            row.config.name,
            row.config.kind,
            "" if row.config.threshold is None else fraction_text(row.config.threshold),
            f"{row.accuracy:.3f}",
            usd(row.cost_per_request_usd),
            relative,
            f"{row.latency_mean_ms:.1f}",
            f"{row.latency_p95_ms:.1f}",
            "/".join(f"{f:.2f}" for f in row.exit_fractions) if row.exit_fractions else "",
            "—" if row.hourly_usd is None else f"{row.hourly_usd:.2f}",
            "★" if row.pareto else "",
        )
    console.print(table)
    if report.delayed:
        console.print(delay_table(report))
    best = report.best_single
    console.print(
        f"Best single model: [bold]{best.config.name}[/bold], accuracy {best.accuracy:.3f}, "
        f"{usd(best.cost_per_request_usd)} per request."
    )
    console.print("Recommended route config (the cheapest at least as accurate as the best "
                  "single model):")
    console.print(recommended_toml(report, header), markup=False, highlight=False)


def delay_table(report: ReplayReport) -> Table:
    table = Table(
        title="Latency (mean / p95 ms) with a network delay on every tier after the first",
    )
    table.add_column("config")
    for delay in report.delayed:
        table.add_column(f"+{delay:g} ms", justify="right")
    for index, row in enumerate(report.rows):
        cells = [
            f"{rows[index].latency_mean_ms:.1f} / {rows[index].latency_p95_ms:.1f}"
            for rows in report.delayed.values()
        ]
        table.add_row(row.config.name, *cells)
    return table


def recommended_toml(report: ReplayReport, header: RecordingHeader) -> str:
    row = report.recommended
    config = row.config
    route = route_config(header)
    best = report.best_single
    top = top_tier_row(report, header)
    saving = (
        f", {1 - row.cost_per_request_usd / top.cost_per_request_usd:.0%} cheaper than the top "
        "tier alone"
        if top.cost_per_request_usd
        else ""
    )
    lines = [
        f"# {config.name}: accuracy {row.accuracy:.3f} (best single model {best.config.name}: "
        f"{best.accuracy:.3f}), {usd(row.cost_per_request_usd)} per request{saving}",
    ]
    return "\n".join([*lines, *route_table(header.route_name, route, config)])


def route_table(name: str, route: RouteConfig, config: CascadeConfig) -> list[str]:
    """The ``[routes.NAME]`` table that serves ``config`` for a recorded ``route``."""
    lines = [f"[routes.{_key(name)}]", f"task = {json.dumps(route.task)}"]
    if route.task == "classify":
        lines.append(f"labels = {_array(route.labels)}")
    elif route.task == "choice":
        lines.append(f"choices = {_array(route.answer_set)}")
    elif route.pattern is not None:
        lines.append(f"pattern = {json.dumps(route.pattern)}")
    text = fraction_text(config.threshold if config.threshold is not None else 1.0)
    return [
        *lines,
        f"policy = {json.dumps(config.policy)}",
        f"threshold = {json.dumps(text) if '/' in text else text}",
        f"wait_for_all = {'true' if config.wait_for_all else 'false'}",
        "tiers = [" + ", ".join(_array(tier) for tier in config.tiers) + "]",
        f"max_tokens = {route.max_tokens}",
        f"deadline_s = {route.deadline_s:g}",
    ]


def _share(cost: float, top: float) -> str:
    if not top:
        return "—"
    share = cost / top
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def _array(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def _key(name: str) -> str:
    bare = name.replace("-", "").replace("_", "").isalnum()
    return name if bare else json.dumps(name)
