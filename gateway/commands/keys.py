"""``coe keys new``: a fresh API key, and the sha256 line the config holds instead of the key."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from gateway.tenants import new_key

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="make API keys for [[tenants]] and [admin]",
        description="Make API keys. The config stores only each key's sha256.",
    )
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = actions.add_parser(
        "new",
        help="print a fresh key and its api_key_sha256 line",
        description=(
            "Print a fresh random key on the first line and, on the second, the line to put in "
            "the tenant's (or [admin]'s) table of the config. Hand the key to its holder now: "
            "it is not stored anywhere."
        ),
    )
    new.set_defaults(func=run_new)


def run_new(_: argparse.Namespace) -> int:
    key, digest = new_key()
    sys.stdout.write(f'{key}\napi_key_sha256 = ["{digest}"]\n')
    return 0
