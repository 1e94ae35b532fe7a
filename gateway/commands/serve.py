"""``coe serve --config FILE``: run the gateway with uvicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn

from gateway.app import create_app
from gateway.config import load_settings, parse_settings
from gateway.logs import configure_logging

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway", description=__doc__)
    parser.add_argument("--config", required=True, help="the TOML config file")
    parser.add_argument("--host", help="override server.host")
    parser.add_argument("--port", type=int, help="override server.port")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--log-format", default="json", choices=["json", "text"], help="log lines (default json)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    server = settings.server
    if args.host or args.port is not None:
        # Re-validate so the loopback rule applies to the overridden host too.
        raw = settings.model_dump()
        raw["server"].update(
            {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        settings = parse_settings(raw, source=args.config)
        server = settings.server
    configure_logging(args.log_level, json=args.log_format == "json")
    uvicorn.run(
        create_app(settings),
        host=server.host,
        port=server.port,
        log_level=args.log_level,
        log_config=None,  # keep configure_logging's handlers for uvicorn's loggers too
        access_log=False,
    )
    return 0
