"""``coe data convert NAME --out FILE``: a public data set in the evaluation JSONL format, or, for a
set of recorded model answers (gsm8k-zeroeval), a full-information recording (RUN.jsonl; gzipped
when FILE ends in .gz) ready for ``coe eval replay`` and ``coe eval search``."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from gateway.errors import CoEError
from gateway.evaluation.datasets import DATASETS, RECORDED_SETS, write_examples
from gateway.evaluation.zeroeval import write_recording

# Where the data sets are looked for when --data-dir is not given, in this order: relative to the
# working directory, then ../shared/data beside a source checkout of this repository.
DATA_DIR_ENV = "COE_DATA_DIR"
_DEFAULT_DIRS = ("../shared/data", "shared/data")
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "data", help="convert public data sets to the evaluation format", description=__doc__
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    sets = [(d.name, d.description) for d in DATASETS.values()]
    sets += [(d.name, d.description) for d in RECORDED_SETS.values()]
    listing = "\n".join(f"  {name:14} {description}" for name, description in sets)
    convert = commands.add_parser(
        "convert",
        help="write one data set as JSONL lines {id, prompt, label}",
        description=f"Write one data set as JSONL lines {{id, prompt, label}}.\n\n"
        f"Data sets:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument(
        "name", choices=sorted([*DATASETS, *RECORDED_SETS]), metavar="NAME", help="the data set"
    )
    convert.add_argument("--out", required=True, type=Path, help="the JSONL file to write")
    convert.add_argument(
        "--data-dir",
        type=Path,
        help=f"the folder holding the data sets (default: ${DATA_DIR_ENV}, else "
        + " or ".join(_DEFAULT_DIRS)
        + ")",
    )
    convert.add_argument(
        "--src",
        type=Path,
        help="the data set's own file or folder (default: its path under the data folder, "
        "e.g. ../shared/data/gsm8k-zeroeval)",
    )
    convert.add_argument("--limit", type=int, help="only the first N examples")
    convert.set_defaults(func=run_convert)


def data_dir(given: Path | None) -> Path:
    candidates = [given] if given is not None else [
        *(Path(p) for p in (os.environ.get(DATA_DIR_ENV), *_DEFAULT_DIRS) if p),
        _BESIDE_CHECKOUT,
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise CoEError(
        f"no data folder found (looked in {', '.join(map(str, candidates))}); pass --data-dir"
    )


def run_convert(args: argparse.Namespace) -> int:
    if args.name in RECORDED_SETS:
        return _convert_recorded(args)
    dataset = DATASETS[args.name]
    try:
        if args.src is not None:
            if not args.src.exists():
                raise FileNotFoundError(f"{args.src}: no such file or folder")
            examples = dataset.read(args.src)
        else:
            examples = dataset.convert(data_dir(args.data_dir))
    except FileNotFoundError as exc:
        raise CoEError(str(exc)) from None
    if args.limit is not None:
        examples = itertools.islice(examples, max(0, args.limit))
    count = write_examples(examples, args.out)
    sys.stderr.write(f"wrote {count} {dataset.name} examples to {args.out}\n")
    return 0


def _convert_recorded(args: argparse.Namespace) -> int:
    recorded = RECORDED_SETS[args.name]
    source = args.src if args.src is not None else data_dir(args.data_dir) / recorded.path
    try:
        recording = recorded.convert(source)
    except FileNotFoundError as exc:
        raise CoEError(str(exc)) from None
    except ValueError as exc:
        raise CoEError(f"{source}: {exc}") from None
    if args.limit is not None:
        del recording.examples[max(0, args.limit):]
    write_recording(recording, args.out)
    endpoints = len(recording.header.endpoints)
    sys.stderr.write(
        f"wrote a recording of {len(recording.examples)} {recorded.name} examples "
        f"x {endpoints} endpoints to {args.out}\n"
    )
    return 0
