"""``coe demo --local``: real local models, a 2-tier cascade, and what it saves.

It starts two llama-cpp-python servers with Gemma 3 270M (the local zoo; the ``models`` extra),
replays cascades over a full-information recording of the bundled SST-2 dev slice (each model's
accuracy alone, the plot), then starts the gateway (SQLite ledger) and sends the slice through the
2-tier route, one request at a time, and prints accuracy, exits per tier, cost and the savings
against the top tier alone. Everything it writes goes to ``out_dir`` (default ./coe-out).

The recording ships with the package (``gateway/demo_data/sst2-local-run.jsonl``, made by this
very path on a 2-core machine), so a first run goes straight to the live pass; a data slice that
it does not cover (or ``fresh=True``) is recorded first, about 3 s a sentence on 2 cores, and a
rerun reuses ``out_dir/demo-run.jsonl``.

The route lives in ``gateway/demo_data/route.toml.template`` (read it: it says what each member is
and how it is priced); ``demo_settings`` fills in the ports the zoo and the gateway got.
"""

from __future__ import annotations

import json
import string
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from coe_client import CoEClient
from gateway.config import Settings, parse_settings
from gateway.evaluation.datasets import parse_example
from gateway.evaluation.record import record_run
from gateway.evaluation.recording import route_config
from gateway.evaluation.replay import build_report, fraction_text
from gateway.evaluation.tables import top_tier_row, usd
from gateway.evaluation.zoo import LlamaZoo, ServerSpec, sigterm_as_interrupt
from gateway.serve import serve_in_background
from gateway.stats import percentile
from providers.recording import Recording, read_recording

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from gateway.evaluation.datasets import Example
    from gateway.evaluation.record import RecordSummary
    from gateway.evaluation.replay import ReplayReport
    from providers.recording import RecordingHeader

ROUTE = "sentiment"
SLICE = "sst2-dev-200.jsonl"
# The pre-made recording of SLICE by this demo's route (package data).
BUNDLED_RUN = "sst2-local-run.jsonl"

SMALL, LARGE = "gemma-small", "gemma-large"


def demo_data(name: str) -> str:
    return (resources.files("gateway") / "demo_data" / name).read_text(encoding="utf-8")


def demo_settings(
    *, small_url: str, large_url: str, ledger_url: str, gateway_port: int = 0
) -> tuple[Settings, str]:
    """The demo's config, and its TOML text (written next to the outputs for reference)."""
    text = string.Template(demo_data("route.toml.template")).substitute(
        gateway_port=gateway_port,
        ledger_url=ledger_url,
        gemma_small_url=small_url,
        gemma_large_url=large_url,
    )
    return parse_settings(tomllib.loads(text), source="demo config"), text


@dataclass(slots=True)
class LiveResult:
    correct: int = 0
    answered: int = 0
    exits: dict[int, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def accuracy(self) -> float:
        total = self.answered + self.failed
        return self.correct / total if total else 0.0

    def latency_percentile(self, q: float) -> float:
        """``gateway.stats.percentile`` of the answered requests' latencies; 0.0 when none was."""
        return percentile(self.latencies_ms, q) if self.latencies_ms else 0.0


async def run_live(
    base_url: str, examples: list[Example], *, on_done: Callable[[], None] | None = None
) -> tuple[LiveResult, dict[str, object]]:
    """Send each example through the gateway with the project's client (the openai SDK inside),
    one at a time; return the tally and the gateway's own cost report for these requests."""
    result = LiveResult()
    async with CoEClient(base_url=base_url, route=ROUTE) as client:
        for example in examples:
            before = anyio.current_time()
            try:
                answer = await client.classify(str(example.messages[-1]["content"]))
            except Exception:  # the SDK's errors (5xx, timeouts): the demo counts and goes on
                result.failed += 1
                continue
            finally:
                if on_done is not None:
                    on_done()
            result.latencies_ms.append((anyio.current_time() - before) * 1000.0)
            result.answered += 1
            result.correct += answer.label == example.label
            result.exits[answer.tier] = result.exits.get(answer.tier, 0) + 1
            result.cost_usd += answer.cost_usd
        report = await client.costs()
    return result, report



def bundled_examples(limit: int | None = None) -> list[Example]:
    lines = [line for line in demo_data(SLICE).splitlines() if line.strip()]
    examples = [parse_example(orjson.loads(line)) for line in lines]
    return examples[:limit] if limit is not None else examples


def run_local_demo(
    out: Path,
    *,
    limit: int | None = None,
    threads: int = 1,
    fresh: bool = False,
    console: Console | None = None,
) -> float:
    """Run ``coe demo --local``; returns its wall time in seconds."""
    out.mkdir(parents=True, exist_ok=True)
    examples = bundled_examples(limit)
    console = console or Console(soft_wrap=True)
    began = time.perf_counter()
    with sigterm_as_interrupt():
        anyio.run(_demo, out, examples, threads, fresh, console)
    took = time.perf_counter() - began
    console.print(f"Done in {took:.0f} s.")
    return took


def seed_recording(path: Path, examples: list[Example]) -> int:
    """Start ``path`` from the bundled recording, keeping the examples of ``examples`` it holds;
    returns how many (0 when ``path`` already exists: a rerun resumes its own recording)."""
    if path.exists():
        return 0
    bundled = resources.files("gateway") / "demo_data" / BUNDLED_RUN
    if not bundled.is_file():
        return 0
    with resources.as_file(bundled) as source:
        recording = read_recording(source)
    wanted = {example.id for example in examples}
    kept = [example for example in recording.examples if example.id in wanted]
    lines = [orjson.dumps(recording.header.to_json())]
    lines += [orjson.dumps(example.to_json()) for example in kept]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(kept)


def _only(recording: Recording, examples: list[Example]) -> Recording:
    """The recording restricted to ``examples`` (a --limit run reports on its own slice)."""
    wanted = {example.id for example in examples}
    return Recording(recording.header, [e for e in recording.examples if e.id in wanted])


async def _demo(
    out: Path, examples: list[Example], threads: int, fresh: bool, console: Console
) -> None:
    data = out / "demo-data.jsonl"
    data.write_text("".join(_json_line(e) for e in examples), encoding="utf-8")
    recording_path = out / "demo-run.jsonl"
    if fresh:
        recording_path.unlink(missing_ok=True)
    seeded = 0 if fresh else seed_recording(recording_path, examples)
    ledger = (out / "demo-ledger.db").resolve()
    for stale in (ledger, ledger.with_name(ledger.name + "-wal"), ledger.with_name(
            ledger.name + "-shm")):
        stale.unlink(missing_ok=True)  # the cost report then covers this run only

    console.rule("CoE Gateway demo: SST-2 sentiment, 2 tiers, real local models")
    console.print(f"Starting two llama-cpp-python servers with Gemma 3 270M ({threads} thread(s) "
                  "each)…")
    specs = [ServerSpec(SMALL, n_threads=threads), ServerSpec(LARGE, n_threads=threads)]
    async with LlamaZoo(specs, log_dir=out / "zoo-logs") as zoo:
        settings, text = demo_settings(
            small_url=zoo.base_url(SMALL), large_url=zoo.base_url(LARGE),
            ledger_url=f"sqlite:///{ledger}",
        )
        (out / "demo-config.toml").write_text(text, encoding="utf-8")
        route = settings.routes[ROUTE]
        console.print(
            f"Route {ROUTE!r}: tier 0 = {', '.join(route.tiers[0])}; tier 1 = "
            f"{', '.join(route.tiers[1])}; θ = 1 (tier 0 answers when all three agree)."
        )

        console.print(f"\n[bold]1.[/bold] Every model answers all {len(examples)} sentences "
                      f"(a full-information recording, {recording_path}):")
        if seeded:
            console.print(f"  {seeded} of them come from the recording bundled with the package "
                          f"({BUNDLED_RUN}, made by this demo); --fresh records them again")
        await _record(settings, data, recording_path, console)
        report = build_report(_only(read_recording(recording_path), examples))
        plot = _plot(report, out / "demo-plot.png", len(examples))

        console.print("\n[bold]2.[/bold] The same sentences through the gateway "
                      "(early quorum: tier 0 escalates as soon as two members disagree):")
        progress = Progress(TextColumn("  gateway"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console)
        async with serve_in_background(settings) as base_url:
            with progress:
                task = progress.add_task("live", total=len(examples))
                live, costs = await run_live(
                    base_url, examples, on_done=lambda: progress.advance(task)
                )

    header = read_recording(recording_path).header
    _print_models(report, console)
    _print_live(live, costs, report, header, console)
    console.print("\n[bold]Outputs[/bold]")
    for path, what in (
        (recording_path, "the recording: every model's answer, latency and cost per sentence"),
        (plot, "accuracy against cost of every replayed configuration"),
        (out / "demo-config.toml", "the route config the gateway ran (ports of this run)"),
        (ledger, "the gateway's SQLite ledger of this run (coe report --config …)"),
        (out / "zoo-logs", "the llama-cpp-python servers' logs"),
    ):
        console.print(f"  {path}  [dim]{what}[/dim]")
    console.print(f"  Replay it any time: coe eval replay {recording_path} --plot plot.png")


async def _record(settings: Settings, data: Path, out: Path, console: Console) -> None:
    progress = Progress(TextColumn("  recording"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console)
    task: list[TaskID] = []

    def started(summary: RecordSummary) -> None:
        if summary.already:
            console.print(f"  reusing {summary.already} sentences already recorded in {out}")
        task.append(progress.add_task("record", total=summary.total - summary.already))

    with progress:
        await record_run(settings, ROUTE, data, out, concurrency=1, logprobs=False,
                         on_start=started, on_recorded=lambda: progress.advance(task[0]))


def _plot(report: ReplayReport, path: Path, size: int) -> Path:
    from gateway.evaluation.plot import plot_report

    return plot_report(report, path, title=f"coe demo: SST-2 dev slice ({size} sentences)")


def _print_models(report: ReplayReport, console: Console) -> None:
    table = Table(title="Each model alone, and each tier as a majority vote (from the recording)")
    for column in ("model", "accuracy", "$/request", "mean latency ms"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in report.rows:
        if row.config.kind in ("single", "ensemble"):
            table.add_row(row.config.name, f"{row.accuracy:.3f}", usd(row.cost_per_request_usd),
                          f"{row.latency_mean_ms:.0f}")
    console.print()
    console.print(table)


def _print_live(
    live: LiveResult,
    costs: dict[str, Any],
    report: ReplayReport,
    header: RecordingHeader,
    console: Console,
) -> None:
    total = live.answered + live.failed
    exits = ", ".join(
        f"tier {tier}: {live.exits.get(tier, 0) / total:.0%}" for tier in range(len(header.tiers))
    )
    counterfactual = costs.get("counterfactual", {})
    top_only = float(counterfactual.get("top_tier_only_cost_usd", 0.0))
    spent = float(costs.get("totals", {}).get("cost_usd", live.cost_usd))
    theta = fraction_text(route_config(header).threshold)
    predicted = next(r for r in report.rows if r.config.name == f"coe θ={theta}")
    top = top_tier_row(report, header)
    console.print(f"\n[bold]Through the gateway (CoE cascade, θ = {theta})[/bold]")
    console.print(f"  accuracy {live.accuracy:.3f} over {total} sentences"
                  + (f" ({live.failed} failed)" if live.failed else ""))
    console.print(f"  exits: {exits}")
    console.print(f"  cost: {usd(spent)} in all, {usd(spent / max(total, 1))} per request")
    if top_only:
        console.print(
            f"  the top tier alone ({', '.join(header.tiers[-1])}) would have cost "
            f"{usd(top_only)} (the gateway's counterfactual): [bold]{1 - spent / top_only:.0%} "
            "saved[/bold]"
        )
    console.print(f"  latency p50 {live.latency_percentile(50):.0f} ms, "
                  f"p95 {live.latency_percentile(95):.0f} ms (client-side)")
    predicted_saving = (
        f", {1 - predicted.cost_per_request_usd / top.cost_per_request_usd:.0%} saved"
        if top.cost_per_request_usd
        else ""
    )
    console.print(
        f"  the replay of the recording predicted accuracy {predicted.accuracy:.3f}, exits "
        + "/".join(f"{f:.2f}" for f in predicted.exit_fractions or ())
        + f"{predicted_saving} (costs follow measured latency, which differs between the "
        "recording, where both Gemma servers ran at once, and the live pass)"
    )
    best = report.best_single
    verdict = "beats" if predicted.accuracy > best.accuracy else (
        "matches" if predicted.accuracy == best.accuracy else "does not reach")
    console.print(f"  on this slice the cascade {verdict} the best single model "
                  f"({best.config.name}, {best.accuracy:.3f})")


def _json_line(example: Example) -> str:
    return json.dumps(example.to_json(), ensure_ascii=False) + "\n"
