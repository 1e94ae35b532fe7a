"""``coe data convert NAME --out FILE``: a public data set in the evaluation JSONL format."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from gateway.errors import CoEError
from gateway.evaluation.datasets import DATASETS, write_examples

# Where the data sets are looked for when --data-dir is not given, in this order.
DATA_DIR_ENV = "COE_DATA_DIR"
_DEFAULT_DIRS = ("../shared/data", "shared/data")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "data", help="convert public data sets to the evaluation format", description=__doc__
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    listing = "\n".join(f"  {d.name:11} {d.description}" for d in DATASETS.values())
    convert = commands.add_parser(
        "convert",
        help="write one data set as JSONL lines {id, prompt, label}",
        description=f"Write one data set as JSONL lines {{id, prompt, label}}.\n\n"
        f"Data sets:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("name", choices=sorted(DATASETS), metavar="NAME", help="the data set")
    convert.add_argument("--out", required=True, type=Path, help="the JSONL file to write")
    convert.add_argument(
        "--data-dir",
        type=Path,
        help=f"the folder holding the data sets (default: ${DATA_DIR_ENV}, else "
        + " or ".join(_DEFAULT_DIRS)
        + ")",
    )
    convert.add_argument("--limit", type=int, help="only the first N examples")
    convert.set_defaults(func=run_convert)


def data_dir(given: Path | None) -> Path:
    candidates = [given] if given is not None else [
        Path(p) for p in (os.environ.get(DATA_DIR_ENV), *_DEFAULT_DIRS) if p
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise CoEError(
        f"no data folder found (looked in {', '.join(map(str, candidates))}); pass --data-dir"
    )


def run_convert(args: argparse.Namespace) -> int:
    dataset = DATASETS[args.name]
    try:
        examples = dataset.convert(data_dir(args.data_dir))
    except FileNotFoundError as exc:
        raise CoEError(str(exc)) from None
    if args.limit is not None:
        examples = itertools.islice(examples, max(0, args.limit))
    count = write_examples(examples, args.out)
    sys.stderr.write(f"wrote {count} {dataset.name} examples to {args.out}\n")
    return 0
