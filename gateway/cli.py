"""The ``coe`` command line: one sub-command per module under ``gateway.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

from gateway.errors import CoEError
from providers.errors import ProviderError

if TYPE_CHECKING:
    from collections.abc import Sequence

# Each module exposes ``register(subparsers)``, which adds its parser and sets ``func``.
COMMAND_MODULES = (
    "gateway.commands.serve",
    "gateway.commands.reload",
    "gateway.commands.report",
    "gateway.commands.audit",
    "gateway.commands.keys",
    "gateway.commands.check_config",
    "gateway.commands.routes",
    "gateway.commands.data",
    "gateway.commands.eval",
    "gateway.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coe",
        description="CoE Gateway: an OpenAI-compatible gateway answering with cascading ensembles.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (CoEError, ProviderError) as exc:
        print(f"coe: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
