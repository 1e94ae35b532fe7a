"""``coe eval record`` (every endpoint answers every example), ``coe eval replay`` (simulate any
cascade over such a recording, without calling a model), ``coe eval search`` (which models to
cascade, at which θ, from one recording) and ``coe eval calibrate`` (θ from a target agreement
with the top tier, with a confidence bound)."""

from __future__ import annotations

import contextlib
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from gateway.config import load_settings
from gateway.errors import CoEError
from gateway.evaluation.calibrate import (
    DEFAULT_MIN_SAMPLES,
    calibrate,
    calibration_json,
    calibration_text,
)
from gateway.evaluation.record import RecordSummary, record_run
from gateway.evaluation.replay import (
    CONFIDENCE_GRID,
    DEFAULT_THRESHOLDS,
    build_report,
    fraction_text,
)
from gateway.evaluation.search import DEFAULT_MAX_TIER0_SIZE, SearchSpace, run_search
from gateway.evaluation.search_output import print_search, search_json, search_toml
from gateway.evaluation.tables import print_report, report_json
from gateway.evaluation.zoo import LlamaZoo, sigterm_as_interrupt, specs_for_settings
from policies.threshold import parse_threshold
from providers.recording import read_recording

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator

    from rich.progress import Task

    from gateway.config import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval", help="record a full-information run, replay cascades over it", description=__doc__
    )
    commands = parser.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")

    record = commands.add_parser(
        "record",
        help="send every example to every endpoint of every tier of a route",
        description="Send every example of DATA to every endpoint of every tier of the route and "
        "write one line per example to OUT (resumable: a rerun skips the ids already in OUT).",
    )
    record.add_argument("--config", required=True, help="the gateway's TOML config file")
    record.add_argument("--route", required=True, help="the route whose endpoints to record")
    record.add_argument(
        "--data", required=True, type=Path, help="JSONL lines {id, prompt|messages, label}"
    )
    record.add_argument("--out", required=True, type=Path, help="the recording, RUN.jsonl")
    record.add_argument(
        "--concurrency", type=int, default=4,
        help="examples in flight at once (default 4; 1 gives the cleanest latencies)",
    )
    record.add_argument(
        "--no-logprobs", dest="logprobs", action="store_false",
        help="do not ask for logprobs (faster on llama.cpp; no confidence baseline)",
    )
    record.add_argument(
        "--no-warmup", dest="warmup", action="store_false",
        help="do not send the first example to every endpoint once, unrecorded, before recording",
    )
    record.add_argument(
        "--start-zoo", action="store_true",
        help="start a local llama-cpp-python server (Gemma 3 270M) on the port of every "
        "loopback llamacpp endpoint of the route, for the duration of the run",
    )
    record.set_defaults(func=run_record)

    replay = commands.add_parser(
        "replay",
        help="simulate single models, ensembles and cascades from a recording",
        description="Simulate, from a recording and without calling a model: every single model, "
        "each tier as a whole ensemble, the CoE cascade for θ = 1/2, 2/3, 1 and any given "
        "(with early quorum, and waiting for all as the seed paper does), and the confidence "
        "cascade over a threshold grid.",
    )
    replay.add_argument("recording", type=Path, metavar="RUN.jsonl")
    replay.add_argument(
        "--threshold", default="",
        help="extra θ values for the CoE cascade, comma-separated (e.g. 0.6,3/4)",
    )
    replay.add_argument(
        "--confidence-grid", default=",".join(f"{p:g}" for p in CONFIDENCE_GRID),
        help="thresholds for the confidence cascade (default %(default)s)",
    )
    replay.add_argument(
        "--tier-delay-ms", default="",
        help="network delays to simulate, comma-separated, each added to every tier after the "
        "first (the seed paper's edge-to-cloud setting), e.g. 0.001,10,100,1000",
    )
    replay.add_argument("--format", choices=("table", "json"), default="table")
    replay.add_argument("--plot", type=Path, help="write accuracy against cost to this PNG")
    replay.set_defaults(func=run_replay)

    search = commands.add_parser(
        "search",
        help="find which models to cascade: the Pareto frontier and a recommended route",
        description="From one full-information recording, evaluate (vote policy, vectorised) "
        "every single model and every cascade of a tier-0 ensemble of 1..N cheap candidates "
        "before each single endpoint of the recording's last tier (optionally top ensembles and "
        "a middle tier), for each θ, with early quorum and waiting for all; print the Pareto "
        "frontier and the recommended route as a full config. Default target: the best single "
        "model's accuracy, at the lowest cost.",
    )
    search.add_argument("recording", type=Path, metavar="RUN.jsonl")
    search.add_argument(
        "--candidates", default="",
        help="tier-0 candidate endpoints, comma-separated (default: the recording's tier 0)",
    )
    search.add_argument(
        "--max-tier0-size", type=int, default=DEFAULT_MAX_TIER0_SIZE,
        help="the largest tier-0 ensemble (default %(default)s)",
    )
    search.add_argument(
        "--threshold", default=",".join(fraction_text(t) for t in DEFAULT_THRESHOLDS),
        help="θ values, comma-separated (default %(default)s)",
    )
    search.add_argument(
        "--top-ensembles", action="store_true",
        help="also try 2 and 3 endpoints of the last tier together as the top tier",
    )
    search.add_argument(
        "--middle", action="store_true",
        help="also try one endpoint as a middle tier (one cheaper than the top tier)",
    )
    goal = search.add_mutually_exclusive_group()
    goal.add_argument(
        "--target-accuracy", type=float,
        help="recommend the cheapest route at least this accurate (default: the best single "
        "model's accuracy)",
    )
    goal.add_argument(
        "--max-cost", type=float, help="recommend the most accurate route costing at most this "
        "($/request)",
    )
    search.add_argument(
        "--margin", type=float, default=0.0, metavar="FRACTION",
        help="with no --target-accuracy: recommend routes at least this much more accurate than "
        "the best single model (e.g. 0.005 = half a point; default 0)",
    )
    search.add_argument(
        "--split", action="store_true",
        help="choose on the even-indexed examples; report the choice on the odd-indexed ones",
    )
    search.add_argument("--format", choices=("table", "json"), default="table")
    search.add_argument(
        "--rows", choices=("all", "frontier"), default="all",
        help="JSON rows: every configuration, or the frontier, the single models and the "
        "recommended one (default %(default)s)",
    )
    search.add_argument(
        "--toml-out", type=Path, help="also write the recommended route's config to this file",
    )
    search.set_defaults(func=run_search_command)

    calibrate_cmd = commands.add_parser(
        "calibrate",
        help="pick θ from a target agreement with the top tier, with a confidence bound",
        description="From one full-information recording (every request audited: a census), "
        "compute tier 0's vote pattern per request and whether it agrees with the top tier's "
        "answer; pick the loosest allowed θ every vote pattern of which it accepts has at least "
        "--min-samples audited and a one-sided lower confidence bound (Clopper-Pearson) on its "
        "agreement at least the target, else the strictest; report that θ served on the "
        "held-out half (--split): its agreement with the top tier, accuracy and cost. The same "
        "arithmetic as the live audit (policies.audit).",
    )
    calibrate_cmd.add_argument("recording", type=Path, metavar="RUN.jsonl")
    calibrate_cmd.add_argument(
        "--target-agreement", type=float,
        help="the agreement with the top tier to guarantee, in (0, 1] (or the route's "
        "target_agreement from --route-toml)",
    )
    calibrate_cmd.add_argument(
        "--confidence", type=float,
        help="the confidence of the guarantee, in (0, 1) (default 0.95, or the route's)",
    )
    calibrate_cmd.add_argument(
        "--min-samples", type=int,
        help=f"audited requests each accepted vote pattern needs (default {DEFAULT_MIN_SAMPLES}, "
        "or the route's min_samples)",
    )
    calibrate_cmd.add_argument(
        "--thresholds",
        help="allowed θ values, comma-separated (default: the route's thresholds, else "
        + ",".join(fraction_text(t) for t in DEFAULT_THRESHOLDS) + ")",
    )
    route_source = calibrate_cmd.add_mutually_exclusive_group()
    route_source.add_argument(
        "--tiers",
        help='the route\'s tiers: endpoints comma-separated, tiers semicolon-separated, e.g. '
        '"a,b,c;d" (default: the recording\'s route)',
    )
    route_source.add_argument(
        "--route-toml", type=Path,
        help="take the tiers (and thresholds, target_agreement, confidence, min_samples when "
        "present) from the route of this config file, e.g. coe eval search --toml-out",
    )
    calibrate_cmd.add_argument(
        "--split", action="store_true",
        help="choose on the even-indexed examples; report the choice on the odd-indexed ones",
    )
    calibrate_cmd.add_argument("--format", choices=("table", "json"), default="table")
    calibrate_cmd.set_defaults(func=run_calibrate_command)


def _floats(raw: str, option: str, parse: type[float] | None = None) -> list[float]:
    values: list[float] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            values.append(parse(part) if parse is not None else parse_threshold(part))
        except ValueError as exc:
            raise CoEError(f"{option}: {exc}") from None
    return values


def run_replay(args: argparse.Namespace) -> int:
    thresholds = [*DEFAULT_THRESHOLDS, *_floats(args.threshold, "--threshold")]
    grid = _floats(args.confidence_grid, "--confidence-grid")
    delays = _floats(args.tier_delay_ms, "--tier-delay-ms", float)
    if any(delay < 0 for delay in delays):
        raise CoEError("--tier-delay-ms: delays must not be negative")
    recording = read_recording(args.recording)
    if not recording.examples:
        raise CoEError(f"{args.recording}: the recording holds no examples yet")
    report = build_report(
        recording, thresholds=thresholds, confidence_grid=grid, tier_delays_ms=delays
    )
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        # Piped or redirected, rich would fold the table into 80 columns.
        print_report(report, recording.header, Console(width=None if sys.stdout.isatty() else 160))
    if args.plot is not None:
        from gateway.evaluation.plot import plot_report

        title = f"{recording.header.route_name}: {report.examples} examples"
        plot_report(report, args.plot, title=title)
        Console(stderr=True).print(f"plot written to {args.plot}")
    return 0


def run_search_command(args: argparse.Namespace) -> int:
    thresholds = tuple(_floats(args.threshold, "--threshold"))
    if not thresholds:
        raise CoEError("--threshold: give at least one θ")
    candidates = tuple(p.strip() for p in args.candidates.split(",") if p.strip()) or None
    recording = read_recording(args.recording)
    if not recording.examples:
        raise CoEError(f"{args.recording}: the recording holds no examples yet")
    space = SearchSpace(
        candidates=candidates,
        max_tier0_size=args.max_tier0_size,
        thresholds=thresholds,
        top_ensembles=args.top_ensembles,
        middle=args.middle,
    )
    try:
        report = run_search(
            recording, space, target_accuracy=args.target_accuracy, max_cost=args.max_cost,
            margin=args.margin,
            split=args.split,
        )
    except ValueError as exc:
        raise CoEError(f"coe eval search: {exc}") from None
    path = str(args.recording)
    if args.toml_out is not None:
        args.toml_out.write_text(search_toml(report, recording.header, path) + "\n")
    if args.format == "json":
        rows = search_json(report, frontier_only=args.rows == "frontier")
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console = Console(width=None if sys.stdout.isatty() else 200)
        print_search(report, recording.header, console, path)
    return 0


def run_calibrate_command(args: argparse.Namespace) -> int:
    recording = read_recording(args.recording)
    if not recording.examples:
        raise CoEError(f"{args.recording}: the recording holds no examples yet")
    route: dict[str, Any] = {}
    tiers: list[list[str]] | None = None
    if args.route_toml is not None:
        route = _toml_route(args.route_toml, recording.header.route_name)
        tiers = route.get("tiers")
    elif args.tiers:
        tiers = [
            [name.strip() for name in tier.split(",") if name.strip()]
            for tier in args.tiers.split(";")
        ]
    raw_thresholds = args.thresholds
    if raw_thresholds is None and "thresholds" in route:
        raw_thresholds = ",".join(str(value) for value in route["thresholds"])
    if raw_thresholds is None:
        raw_thresholds = ",".join(fraction_text(t) for t in DEFAULT_THRESHOLDS)
    thresholds = _floats(raw_thresholds, "--thresholds")
    if not thresholds:
        raise CoEError("--thresholds: give at least one θ")
    target = _pick(args.target_agreement, route, "target_agreement", None)
    if target is None:
        raise CoEError("--target-agreement: required (or target_agreement in --route-toml)")
    confidence = _pick(args.confidence, route, "confidence", 0.95)
    min_samples = _pick(args.min_samples, route, "min_samples", DEFAULT_MIN_SAMPLES)
    try:
        result = calibrate(
            recording,
            target=float(target),
            confidence=float(confidence),
            min_samples=int(min_samples),
            thresholds=thresholds,
            tiers=tiers,
            split=args.split,
        )
    except ValueError as exc:
        raise CoEError(f"coe eval calibrate: {exc}") from None
    path = str(args.recording)
    if args.format == "json":
        report = calibration_json(result, path)
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(calibration_text(result, path) + "\n")
    return 0


def _pick(given: Any, route: dict[str, Any], key: str, default: Any) -> Any:
    return given if given is not None else route.get(key, default)


def _toml_route(path: Path, name: str) -> dict[str, Any]:
    """The route called ``name`` in a config file, or its only route."""
    try:
        routes = tomllib.loads(path.read_text()).get("routes", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CoEError(f"--route-toml {path}: {exc}") from None
    if not isinstance(routes, dict) or not routes:
        raise CoEError(f"--route-toml {path}: no [routes.NAME] table")
    if name in routes:
        route = routes[name]
    elif len(routes) == 1:
        route = next(iter(routes.values()))
    else:
        raise CoEError(
            f"--route-toml {path}: no route {name!r}, and more than one route to choose from"
        )
    if not isinstance(route, dict):
        raise CoEError(f"--route-toml {path}: routes.{name} is not a table")
    return route


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("—/s" if speed is None else f"{speed:.1f} ex/s", style="progress.data.speed")


def run_record(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.route not in settings.routes:
        raise CoEError(f"{args.config}: no route {args.route!r}")
    # soft_wrap: a path or a data line's problem must stay on one line, whatever the width.
    console = Console(stderr=True, soft_wrap=True)
    progress = Progress(
        TextColumn("[bold]recording[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    task: list[TaskID] = []

    def started(summary: RecordSummary) -> None:
        console.print(
            f"{summary.total} examples in {args.data}; {summary.already} already in {args.out}"
        )
        task.append(progress.add_task("record", total=summary.total - summary.already))

    def recorded() -> None:
        progress.advance(task[0])

    async def main() -> RecordSummary:
        async with _zoo(settings, args.route, enabled=args.start_zoo):
            with progress:
                return await record_run(
                    settings,
                    args.route,
                    args.data,
                    args.out,
                    concurrency=args.concurrency,
                    logprobs=args.logprobs,
                    warmup=args.warmup,
                    on_start=started,
                    on_recorded=recorded,
                )

    with sigterm_as_interrupt() if args.start_zoo else contextlib.nullcontext():
        summary = anyio.run(main)
    console.print(f"recorded {summary.recorded} examples to {summary.out}")
    for problem in summary.problems:
        console.print(f"[red]{problem.describe(args.data)}[/red] (skipped)", highlight=False)
    if summary.problems:
        console.print(f"{len(summary.problems)} malformed data line(s) were not recorded")
        return 1
    return 0


@contextlib.asynccontextmanager
async def _zoo(settings: Settings, route: str, *, enabled: bool) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    names = {name for tier in settings.routes[route].tiers for name in tier}
    specs = specs_for_settings(settings, names)
    if not specs:
        raise CoEError(f"--start-zoo: route {route!r} has no loopback llamacpp endpoint")
    async with LlamaZoo(specs):
        yield
