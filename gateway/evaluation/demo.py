"""``coe demo``: twelve real LLMs' recorded answers to GSM8K, served over HTTP, through the gateway.

What runs (nothing is mocked between the client and the models):

1. The recording ``gateway/demo_data/gsm8k-zeroeval.jsonl.gz`` (``gateway.evaluation.zeroeval``:
   12 LLMs' raw answers to GSM8K's 1,319 test questions, per-token prices) is split in two halves
   by ``gateway.evaluation.search``. The search picks the cascade (tiers and θ) on one half; every
   figure the demo prints is measured on the other, so they are out of sample.
2. ``gateway.evaluation.model_server`` serves each recorded model as an OpenAI-compatible endpoint
   on loopback (one aiohttp server, a path per model), answering with the model's recorded text for
   the question after its modelled latency divided by ``speed``. No token counts were recorded, so
   no ``usage`` is sent and every cost is estimated from text length, and marked ``estimated``.
3. The real gateway (``gateway.serve.serve_in_background``) runs the chosen route over those
   endpoints (``kind = "openai"``, priced per token as the recording says) on an SQLite ledger in
   ``out_dir``; every held-out question goes through it with the official ``openai`` SDK,
   ``concurrency`` at a time, once at θ = 2/3 and once at θ = 1 (the ``x-coe-threshold`` header
   on each request; one route, one ledger, a time window per pass).
4. It prints each model alone (from the recording, on the same questions), the two live cascades
   (accuracy, exits per tier, $/question, from the gateway's answers) and the gateway's own cost
   report for each pass (``GET /v1/coe/costs``: total and the top-tier-only counterfactual), says
   where the cascade wins and where it does not against the single models (computed), checks the
   live figures against ``coe eval replay`` of the same questions and route, and writes the plot.

Why the served route waits for every call of a tier (``wait_for_all = true``): with early quorum
the gateway cancels a tier's slower calls once the vote is decided, so which calls are paid (and
the top-tier counterfactual, which averages the answering calls' output) depends on the order the
answers arrive in. ``coe eval replay`` assumes the recorded-latency order, and the ``replay``
provider enforces it by turn-taking inside one process; over real HTTP, with sleeps and 64 requests
in flight on a loaded machine, answers due within a few milliseconds of each other can arrive
either way. Waiting for all makes every figure independent of arrival order: every call of each
tier a question reaches finishes and is paid, the vote is taken on all of them, and ties go by
the tier's configured order (``policies.vote.plurality``), in the gateway and in the replay alike.
So the live accuracy, exits and cost per question equal ``Replayer.evaluate`` of the same config
exactly, and the ledger's totals equal their sum (``tests/test_demo_gsm8k.py``). The price: a
question pays each reached tier's slowest call in full; the demo prints what early quorum would
have cost, from the replay, next to it. Latency is not compared: it is the modelled latency
compressed by ``speed`` plus the gateway's own time on this machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coe_client import CoEClient
from gateway.config import parse_settings
from gateway.evaluation.model_server import serve_recorded_models
from gateway.evaluation.recording import answer_spec, route_config
from gateway.evaluation.replay import (
    CascadeConfig,
    Replayer,
    ReplayReport,
    Row,
    fraction_text,
    mark_pareto,
    recommend,
)
from gateway.serve import serve_in_background
from policies.answers import normalise
from policies.threshold import parse_threshold
from providers.recording import Recording

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from gateway.config import Settings
    from gateway.evaluation.model_server import ModelServer
    from providers.recording import RecordedExample

THRESHOLDS = (2 / 3, 1.0)
DEFAULT_SPEED = 50.0
DEFAULT_CONCURRENCY = 64
LEDGER_NAME = "demo-gsm8k-ledger.db"
PLOT_NAME = "demo-gsm8k-pareto.png"
# Generous: on a machine shared with other work a request can queue for long, and a client that
# gives up leaves a request the ledger never records.
_CLIENT_TIMEOUT_S = 600.0
_ROUTE_DEADLINE_S = 300.0


@dataclass(frozen=True, slots=True)
class ChosenRoute:
    """The cascade the search picked on one half, and the other half it is shown on."""

    tiers: tuple[tuple[str, ...], ...]
    threshold: float
    chosen_on: int  # questions the search saw
    held_out: Recording  # the questions the demo sends
    summary: str  # what the search says about its pick


@dataclass(slots=True)
class LivePass:
    """One pass of the held-out questions through the gateway at one θ."""

    threshold: float
    tiers: int
    correct: int = 0
    failed: int = 0
    exits: list[int] = field(default_factory=list)
    # Per question, in the held-out order: the cost the gateway reported (coe.cost_usd).
    costs: list[float] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # GET /v1/coe/costs of this pass
    # Decided without an answer (a 502 after every call of the last tier failed or was
    # unparsable): counted wrong, with their exit tier and cost, as the replay counts them.
    unanswered: int = 0
    # Calls that failed live although the recording has their answer (should be none).
    lost_calls: int = 0
    errors: list[str] = field(default_factory=list)  # the first few failed questions' errors
    wall_s: float = 0.0

    @property
    def questions(self) -> int:
        return len(self.costs)

    @property
    def accuracy(self) -> float:
        return self.correct / self.questions if self.questions else 0.0

    @property
    def cost_per_question_usd(self) -> float:
        return math.fsum(self.costs) / self.questions if self.questions else 0.0

    @property
    def exit_fractions(self) -> tuple[float, ...]:
        return tuple(count / self.questions for count in self.exits) if self.questions else ()


@dataclass(frozen=True, slots=True)
class DemoResult:
    route: ChosenRoute
    singles: list[Row]  # each model alone, replayed on the held-out questions
    passes: list[LivePass]
    replayed: list[Row]  # the replay of each live pass's config (wait for all)
    early_quorum: list[Row]  # the same θ with early quorum, replayed (not served)
    verdicts: list[str]
    plot: Path | None
    wall_s: float


def live_config(route: ChosenRoute, theta: float) -> CascadeConfig:
    """The replay config of what the demo serves at ``theta``."""
    return CascadeConfig(
        f"coe θ={fraction_text(theta)} wait-all", "coe", route.tiers, theta, wait_for_all=True
    )


def demo_settings(
    recording: Recording, route: ChosenRoute, server: ModelServer, ledger_url: str
) -> Settings:
    """The gateway's config: each recorded model an ``openai`` endpoint on ``server``, priced per
    token as recorded; the chosen route, waiting for every call of a tier."""
    header = recording.header
    endpoints = [
        {
            "name": info.name,
            "kind": "openai",
            "base_url": server.base_url(info.name),
            "model": info.model,
            "usd_per_mtok_in": info.usd_per_mtok_in,
            "usd_per_mtok_out": info.usd_per_mtok_out,
            # Retries cannot change a figure (a recorded answer is the same on every try; a
            # recorded failure costs nothing each time) but ride out a connection dropped on a
            # loaded machine. A recorded failure must not trip a breaker.
            "max_retries": 2,
            "breaker_failures": 0,
            "timeout_s": _ROUTE_DEADLINE_S,
            "max_concurrency": 1024,
        }
        for info in header.endpoints.values()
    ]
    served = route_config(header).model_dump(mode="json")
    served.update(
        tiers=[list(tier) for tier in route.tiers],
        threshold=route.threshold,
        wait_for_all=True,
        deadline_s=_ROUTE_DEADLINE_S,
    )
    return parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "ledger": {"url": ledger_url},
            "endpoints": endpoints,
            "routes": {header.route_name: served},
        },
        source="coe demo",
    )


# Half a point over the best single model (choose_route).
SEARCH_MARGIN = 0.005


def choose_route(recording: Recording) -> ChosenRoute:
    """``coe eval search --split --margin 0.005``'s pick: chosen on the even-indexed questions;
    the odd-indexed ones, which took no part in the choice, are the demo's. The half-point margin
    over the best single model keeps the search from picking a route that clears the bar by one
    lucky question on the half it sees (without it, the pick loses 1.4 points held out:
    bench/EVAL.md, GSM8K)."""
    from gateway.evaluation.search import run_search

    report = run_search(recording, split=True, margin=SEARCH_MARGIN)
    chosen = report.recommended
    config = chosen.config
    summary = (
        f"On its half the search recommends {config.name} ({report.target}): accuracy "
        f"{chosen.accuracy:.1%}, {_usd(chosen.cost_per_request_usd)}/question."
    )
    return ChosenRoute(
        tiers=config.tiers,
        threshold=config.threshold if config.threshold is not None else 1.0,
        chosen_on=report.examples,
        held_out=Recording(recording.header, recording.examples[1::2]),
        summary=summary,
    )


async def run_demo(
    recording: Recording,
    out_dir: Path,
    *,
    route: ChosenRoute | None = None,
    limit: int | None = None,
    speed: float = DEFAULT_SPEED,
    concurrency: int = DEFAULT_CONCURRENCY,
    thresholds: Sequence[float] = THRESHOLDS,
    plot: bool = True,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo on ``recording`` (``limit``: the first N held-out questions only)."""
    began = time.perf_counter()
    console = console or Console(soft_wrap=True)
    ledger = _fresh_ledger(out_dir)
    route = route or choose_route(recording)
    held_out = route.held_out
    if limit is not None:
        held_out = Recording(held_out.header, held_out.examples[:limit])
    route = ChosenRoute(route.tiers, route.threshold, route.chosen_on, held_out, route.summary)
    _print_intro(recording, route, speed, console)

    passes: list[LivePass] = []
    async with serve_recorded_models(held_out, speed=speed) as server:
        settings = demo_settings(recording, route, server, f"sqlite:///{ledger}")
        async with serve_in_background(settings) as base_url:
            progress = Progress(TextColumn("  {task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), console=console)
            with progress:
                for theta in thresholds:
                    passes.append(
                        await live_pass(base_url, held_out, route, theta, concurrency, progress)
                    )

    replayer = Replayer(held_out)
    singles = [
        replayer.evaluate(CascadeConfig(name, "single", ((name,),), wait_for_all=True))
        for name in recording.endpoint_names
    ]
    replayed = [replayer.evaluate(live_config(route, p.threshold)) for p in passes]
    early = [
        replayer.evaluate(CascadeConfig(f"coe θ={fraction_text(p.threshold)}", "coe",
                                        route.tiers, p.threshold))
        for p in passes
    ]
    verdicts = [verdict(p, singles) for p in passes]
    written = _plot(singles, replayed, early, passes, out_dir / PLOT_NAME, console) if plot \
        else None
    result = DemoResult(route, singles, passes, replayed, early, verdicts, written,
                        time.perf_counter() - began)
    print_result(result, console)
    return result


def _fresh_ledger(out_dir: Path) -> Path:
    """The ledger's path in ``out_dir``, emptied: the cost report then covers this run only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = (out_dir / LEDGER_NAME).resolve()
    for stale in (ledger, ledger.with_name(ledger.name + "-wal"),
                  ledger.with_name(ledger.name + "-shm")):
        stale.unlink(missing_ok=True)
    return ledger


def _failed(result: LivePass, exc: openai.APIError) -> None:
    """A question the gateway did not decide (no decision headers): the figures then differ."""
    result.failed += 1
    if len(result.errors) < 3:
        result.errors.append(f"{type(exc).__name__}: {exc}"[:300])


async def live_pass(
    base_url: str,
    held_out: Recording,
    route: ChosenRoute,
    theta: float,
    concurrency: int,
    progress: Progress | None = None,
) -> LivePass:
    """Send every held-out question through the gateway at ``theta``, ``concurrency`` at a time,
    and read the gateway's cost report for exactly this pass's window."""
    spec = answer_spec(held_out.header)
    examples = held_out.examples
    result = LivePass(theta, len(route.tiers), exits=[0] * len(route.tiers))
    costs: list[float | None] = [None] * len(examples)
    limiter = anyio.Semaphore(concurrency)
    task = progress.add_task(f"θ = {fraction_text(theta)}", total=len(examples)) \
        if progress is not None else None
    header = {"x-coe-threshold": _theta_header(theta)}
    began = time.perf_counter()
    async with CoEClient(base_url=base_url, max_retries=0, timeout=_CLIENT_TIMEOUT_S) as client:
        since = datetime.now(UTC)

        async def ask(index: int, example: RecordedExample) -> None:
            async with limiter:
                try:
                    completion = await client.openai.chat.completions.create(
                        model=held_out.header.route_name,
                        messages=[dict(m) for m in example.messages],  # type: ignore[misc]
                        extra_headers=header,
                    )
                except openai.APIStatusError as exc:
                    headers = exc.response.headers
                    if "x-coe-tier" in headers:
                        # A 502/504 after a decision: the cascade reached a tier and paid for its
                        # calls but has no answer (every call of the last tier failed or was
                        # unparsable). The replay counts it so too: a wrong answer, billed.
                        result.exits[int(headers["x-coe-tier"])] += 1
                        costs[index] = float(headers["x-coe-cost-usd"])
                        result.unanswered += 1
                    else:
                        _failed(result, exc)
                        costs[index] = 0.0
                except openai.APIError as exc:
                    _failed(result, exc)
                    costs[index] = 0.0
                else:
                    coe = (completion.model_extra or {})["coe"]
                    result.lost_calls += sum(
                        call["status"] not in ("ok", "unparsable")
                        and example.calls[call["endpoint"]].text is not None
                        for call in coe["calls"]
                    )
                    gold = normalise(example.label, spec) or example.label
                    result.correct += completion.choices[0].message.content == gold
                    result.exits[int(coe["tier"])] += 1
                    costs[index] = float(coe["cost_usd"])
                if progress is not None and task is not None:
                    progress.advance(task)

        async with anyio.create_task_group() as group:
            for index, example in enumerate(examples):
                group.start_soon(ask, index, example)
        until = datetime.now(UTC)
        result.report = await client.costs(since=since, until=until)
    result.costs = [0.0 if cost is None else cost for cost in costs]
    result.wall_s = time.perf_counter() - began
    return result


def _theta_header(theta: float) -> str:
    """θ as ``x-coe-threshold`` carries it: "2/3" when that reads back as exactly ``theta``."""
    text = fraction_text(theta)
    return text if parse_threshold(text) == theta else repr(theta)


def best_single(singles: Sequence[Row]) -> Row:
    """The most accurate single model (ties: the cheaper)."""
    return max(singles, key=lambda row: (row.accuracy, -row.cost_per_request_usd))


def verdict(live: LivePass, singles: Sequence[Row]) -> str:
    """Where the cascade at this θ wins and where it does not, against the single models."""
    best = best_single(singles)
    name = f"θ = {fraction_text(live.threshold)}"
    cost, accuracy = live.cost_per_question_usd, live.accuracy
    share = cost / best.cost_per_request_usd if best.cost_per_request_usd else math.inf
    dominating = [
        row for row in singles
        if row.accuracy >= accuracy and row.cost_per_request_usd <= cost
        and (row.accuracy > accuracy or row.cost_per_request_usd < cost)
    ]
    head = (f"At {name} the cascade ({accuracy:.1%}, {_usd(cost)}/question) against the best "
            f"single model, {best.config.name} ({best.accuracy:.1%}, "
            f"{_usd(best.cost_per_request_usd)}/question): ")
    if accuracy >= best.accuracy and cost < best.cost_per_request_usd:
        gained = ("as accurate" if accuracy == best.accuracy
                  else f"{_points(accuracy - best.accuracy)} accuracy")
        body = f"WINS: {gained} at {share:.0%} of its cost."
    elif accuracy >= best.accuracy:
        body = (f"more accurate by {_points(accuracy - best.accuracy)}, but it costs "
                f"{share:.1f}× as much: no win on cost.")
    else:
        body = (f"{share:.0%} of its cost but {(best.accuracy - accuracy) * 100:.1f} points "
                "less accurate: no win on accuracy.")
    if dominating:
        cheapest = min(dominating, key=lambda row: row.cost_per_request_usd)
        body += (f" {cheapest.config.name} alone is at least as accurate ({cheapest.accuracy:.1%})"
                 f" for no more ({_usd(cheapest.cost_per_request_usd)}/question): the cascade "
                 "is dominated here.")
    else:
        body += " No single model is both as accurate and as cheap: it is on the Pareto frontier."
    return head + body


def _points(difference: float) -> str:
    return f"{difference * 100:+.1f} points"


def _usd(value: float) -> str:
    return f"${value:.6f}"


def _print_intro(recording: Recording, route: ChosenRoute, speed: float, console: Console) -> None:
    header = recording.header
    console.rule("CoE Gateway demo: 12 real LLMs' recorded answers to GSM8K, through the gateway")
    tiers = "; ".join(f"tier {i} = {', '.join(tier)}" for i, tier in enumerate(route.tiers))
    console.print(
        f"Route {header.route_name!r} (task number), chosen by `coe eval search --split "
        f"--margin {SEARCH_MARGIN}` on {route.chosen_on} other questions: {tiers}; searched θ = "
        f"{fraction_text(route.threshold)}. {route.summary}"
    )
    console.print(
        f"Every figure below is measured on the {len(route.held_out.examples)} held-out "
        "questions (out of sample). Each model is a real OpenAI-compatible HTTP endpoint on "
        f"loopback answering with its recorded text after its modelled latency ÷ {speed:g}; the "
        "route waits for every call of a tier, so the figures do not depend on arrival order. "
        "Token counts were not recorded: every $ figure is [bold]estimated[/bold] "
        "(characters ÷ 4)."
    )


def print_result(result: DemoResult, console: Console) -> None:
    n = len(result.route.held_out.examples)
    tiers = len(result.route.tiers)
    table = Table(
        title=f"{n} held-out GSM8K questions: each model alone (from the recording) and the "
              "cascade through the live gateway",
        caption="$ estimated from text length (no token counts were recorded)",
    )
    table.add_column("model / route")
    table.add_column("accuracy", justify="right")
    for tier in range(tiers):
        table.add_column(f"exit t{tier}", justify="right")
    table.add_column("$/question", justify="right")
    best = best_single(result.singles)
    for row in sorted(result.singles, key=lambda r: r.cost_per_request_usd):
        name = f"{row.config.name} (best)" if row is best else row.config.name
        table.add_row(name, f"{row.accuracy:.1%}", *([""] * tiers),
                      _usd(row.cost_per_request_usd))
    for live in result.passes:
        table.add_row(
            f"[bold]CoE θ={fraction_text(live.threshold)}, live[/bold]",
            f"[bold]{live.accuracy:.1%}[/bold]",
            *(f"{fraction:.1%}" for fraction in live.exit_fractions),
            f"[bold]{_usd(live.cost_per_question_usd)}[/bold]",
        )
    console.print()
    console.print(table)

    report = Table(title="The gateway's cost report per pass (GET /v1/coe/costs), estimated")
    for column in ("pass", "requests", "calls", "cost", "top tier alone", "saved"):
        report.add_column(column, justify="left" if column == "pass" else "right")
    for live in result.passes:
        totals = live.report.get("totals", {})
        counterfactual = live.report.get("counterfactual", {})
        report.add_row(
            f"θ = {fraction_text(live.threshold)}", str(totals.get("requests")),
            str(totals.get("calls")), _usd(float(totals.get("cost_usd", 0.0))),
            _usd(float(counterfactual.get("top_tier_only_cost_usd", 0.0))),
            f"{float(counterfactual.get('savings_ratio', 0.0)):.1%}",
        )
    console.print(report)
    top = ", ".join(result.route.tiers[-1])
    console.print(f"  'top tier alone': one call to every model of the route's last tier ({top}) "
                  "per question, as the gateway prices its counterfactual.")
    for live, early in zip(result.passes, result.early_quorum, strict=True):
        console.print(
            f"  With early quorum (the gateway's default; not served here) θ = "
            f"{fraction_text(live.threshold)} would cost {_usd(early.cost_per_request_usd)}"
            f"/question at accuracy {early.accuracy:.1%} (replay)."
        )
    console.print()
    for line in result.verdicts:
        console.print(line)
    console.print()
    for live, replayed in zip(result.passes, result.replayed, strict=True):
        same = (live.accuracy == replayed.accuracy
                and live.exit_fractions == replayed.exit_fractions
                and live.cost_per_question_usd == replayed.cost_per_request_usd)
        console.print(
            f"  `coe eval replay` of θ = {fraction_text(live.threshold)} (wait-all) on the same "
            f"questions: accuracy {replayed.accuracy:.1%}, exits "
            + "/".join(f"{f:.1%}" for f in replayed.exit_fractions or ())
            + f", {_usd(replayed.cost_per_request_usd)}/question: "
            + ("[green]identical to the live pass[/green]" if same
               else "[red]DIFFERENT from the live pass[/red]")
        )
    for live in result.passes:
        if live.lost_calls or live.failed:
            console.print(
                f"  [red]θ = {fraction_text(live.threshold)}: {live.failed} question(s) failed "
                f"and {live.lost_calls} call(s) the recording answered failed live (an "
                "overloaded machine?): those figures differ from the replay.[/red]"
            )
            for error in live.errors:
                console.print(f"    {error}", markup=False)
    if result.plot is not None:
        console.print(f"\nPareto plot: {result.plot}")
    console.print(f"Done in {result.wall_s:.0f} s.")


def _plot(
    singles: list[Row],
    replayed: list[Row],
    early: list[Row],
    passes: list[LivePass],
    path: Path,
    console: Console,
) -> Path | None:
    from gateway.errors import CoEError
    from gateway.evaluation.plot import plot_report

    rows = mark_pareto([*singles, *replayed, *early])
    best = best_single([row for row in rows if row.config.kind == "single"])
    report = ReplayReport(rows=rows, delayed={}, best_single=best,
                          recommended=recommend(rows, best.accuracy), examples=0)
    live = [(f"live θ={fraction_text(p.threshold)}", p.cost_per_question_usd, p.accuracy)
            for p in passes]
    try:
        return plot_report(report, path, title="coe demo: GSM8K held-out questions (cost "
                           "estimated)", live=live)
    except CoEError as exc:
        console.print(f"[yellow]No plot: {exc.message}[/yellow]")
        return None
