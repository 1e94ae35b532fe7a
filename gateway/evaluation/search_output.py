"""How ``coe eval search`` shows its answer: the Pareto frontier as a rich table, the recommended
route as a full TOML config (which ``coe check-config`` accepts), and JSON rows."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.table import Table

from gateway.evaluation.recording import route_config
from gateway.evaluation.tables import route_table, usd

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.evaluation.replay import Row
    from gateway.evaluation.search import SearchReport
    from providers.recording import RecordingHeader

ESTIMATED_NOTE = (
    "$/request is estimated: the recording has no token counts, so tokens are estimated from "
    "text lengths (characters / 4)"
)


def _row_json(row: Row, recommended: Row, *, estimated: bool) -> dict[str, Any]:
    return {
        **row.contract_json(),
        "latency_p95_ms": round(row.latency_p95_ms, 3),
        "tiers": [list(tier) for tier in row.config.tiers],
        "pareto": row.pareto,
        "cost_estimated": estimated,
        "recommended": row.config == recommended.config,
    }


def search_json(report: SearchReport, *, frontier_only: bool = False) -> list[dict[str, Any]]:
    """``coe eval replay --format json``'s rows plus ``latency_p95_ms``, ``tiers``, ``pareto``,
    ``cost_estimated`` and ``recommended`` (true on the recommended row only). With a split, rows
    carry ``split``: ``choose`` (the half the choice was made on) or ``held-out`` (the other half:
    the recommended route, marked recommended too, and every single model)."""
    rows = [
        row for row in report.rows
        if not frontier_only or row.pareto or row.config.kind == "single"
        or row.config == report.recommended.config
    ]
    lines = [_row_json(row, report.recommended, estimated=report.estimated) for row in rows]
    if report.held_out is None:
        return lines
    held = [
        {**_row_json(row, report.recommended, estimated=report.estimated), "split": "held-out"}
        for row in report.held_out
    ]
    return [{**line, "split": "choose"} for line in lines] + held


def print_search(
    report: SearchReport, header: RecordingHeader, console: Console, recording_path: str
) -> None:
    best = report.best_single
    half = " (the even-indexed half)" if report.held_out is not None else ""
    table = Table(
        title=f"Pareto frontier of {report.configs} configurations of {header.route_name!r} over "
        f"{report.examples} examples{half} (vote policy), searched in {report.seconds:.2f} s",
        caption="★ recommended · frontier: no configuration is both at least as accurate and at "
        "most as costly · (+N alike): N more with the same figures · exits: fraction answered at "
        "each tier"
        + (f"\n{ESTIMATED_NOTE}" if report.estimated else ""),
    )
    for column, justify in (
        ("configuration", "left"), ("kind", "left"), ("accuracy", "right"),
        ("$/request", "right"), ("vs best single", "right"), ("p50 ms", "right"),
        ("p95 ms", "right"), ("exits", "right"), ("", "center"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    shown = [row for row in report.rows if row.pareto or row is report.recommended]
    # Configurations with the very same figures (θ or the protocol made no difference): one line.
    groups: dict[tuple[object, ...], list[Row]] = {}
    for row in sorted(shown, key=lambda r: (r.cost_per_request_usd, -r.accuracy)):
        key = (row.accuracy, row.cost_per_request_usd, row.latency_p50_ms, row.latency_p95_ms,
               row.exit_fractions)
        groups.setdefault(key, []).append(row)
    for rows in groups.values():
        row = next((r for r in rows if r is report.recommended), rows[0])
        cells = _cells(row, best)
        if len(rows) > 1:
            cells[0] += f" (+{len(rows) - 1} alike)"
        table.add_row(*cells, "★" if row is report.recommended else "")
    console.print(table)
    console.print(
        f"Best single model: [bold]{best.config.name}[/bold], accuracy {best.accuracy:.4f}, "
        f"{usd(best.cost_per_request_usd)} per request. Target: {report.target}.",
        highlight=False,
    )
    if report.held_out is not None:
        console.print(held_out_table(report))
    console.print("Recommended route (a full config; `coe check-config` accepts it):")
    console.print(search_toml(report, header, recording_path), markup=False, highlight=False)


def _cells(row: Row, best: Row) -> list[str]:
    share = row.cost_per_request_usd / best.cost_per_request_usd if best.cost_per_request_usd else 0
    return [
        row.config.name,
        row.config.kind,
        f"{row.accuracy:.4f}",
        usd(row.cost_per_request_usd),
        f"{share:.0%}" if best.cost_per_request_usd else "—",
        f"{row.latency_p50_ms:.0f}",
        f"{row.latency_p95_ms:.0f}",
        "/".join(f"{f:.2f}" for f in row.exit_fractions) if row.exit_fractions else "",
    ]


def held_out_table(report: SearchReport) -> Table:
    """The recommended route and every single model on the half the choice never saw."""
    assert report.held_out is not None
    best_name = report.best_single.config.name
    held_best = next(row for row in report.held_out if row.config.name == best_name)
    table = Table(
        title=f"Held out: the odd-indexed {report.held_out_examples} examples, not used to choose",
        caption=f"vs best single: against {best_name}, the best single model of the choosing half",
    )
    for column in ("configuration", "kind", "accuracy", "$/request", "vs best single",
                   "p50 ms", "p95 ms", "exits", ""):
        table.add_column(column, justify="left" if column in ("configuration", "kind") else "right")
    for index, row in enumerate(report.held_out):
        table.add_row(*_cells(row, held_best), "★" if index == 0 else "")
    return table


def search_toml(report: SearchReport, header: RecordingHeader, recording_path: str) -> str:
    """The recommended route as a full config: its endpoints answer from the recording
    (``kind = "replay"``), so it runs as it is; swap in each model's live endpoint to go live."""
    row, best = report.recommended, report.best_single
    config = row.config
    route = route_config(header)
    used = [name for tier in config.tiers for name in tier]
    share = (
        f", {row.cost_per_request_usd / best.cost_per_request_usd:.0%} of its cost"
        if best.cost_per_request_usd else ""
    )
    lines = [
        f"# {config.name}: accuracy {row.accuracy:.4f} over {report.examples} examples "
        f"(best single model {best.config.name}: {best.accuracy:.4f}), "
        f"{usd(row.cost_per_request_usd)} per request{share}"
        + (" (estimated)" if report.estimated else ""),
        "# The endpoints answer from the recording. To call the real models, give each",
        '# kind = "openai", its base_url, api_key_env and model (the recorded one: see comments).',
    ]
    gpus = {header.endpoints[n].gpu: header.endpoints[n].gpu_hour_usd for n in used}
    priced = {gpu: hourly for gpu, hourly in gpus.items() if gpu is not None}
    if priced:
        lines += ["", "[pricing.gpu_hour_usd]"]
        lines += [f"{json.dumps(gpu)} = {hourly}" for gpu, hourly in priced.items()]
    for name in used:
        info = header.endpoints[name]
        lines += [
            "",
            "[[endpoints]]",
            f"name = {json.dumps(name)}",
            'kind = "replay"',
            f"recording = {json.dumps(recording_path)}",
            f"model = {json.dumps(name)}  # recorded: {info.kind} {info.model}",
            f"usd_per_mtok_in = {info.usd_per_mtok_in}",
            f"usd_per_mtok_out = {info.usd_per_mtok_out}",
        ]
        if info.gpu is not None:
            lines += [f"gpu = {json.dumps(info.gpu)}", f"gpus = {info.gpus}"]
    lines += ["", *route_table(header.route_name, route, config)]
    return "\n".join(lines)
