"""``coe serve --config FILE``: run the gateway with uvicorn; SIGHUP re-reads FILE (coe reload).

``--workers N`` (``server.workers``) serves the port from N processes (gateway.workers): send
SIGHUP to this process to reload them all; ``POST /v1/coe/reload`` reloads only the worker that
answers it."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.logs import configure_logging
from gateway.reload import ConfigSource, remember_sighup
from gateway.serve import ProcessServer, server_config
from gateway.workers import run_workers, worker_count

if TYPE_CHECKING:
    import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway", description=__doc__)
    parser.add_argument("--config", required=True, help="the TOML config file")
    parser.add_argument("--host", help="override server.host")
    parser.add_argument("--port", type=int, help="override server.port")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="override server.drain_timeout_s: on SIGTERM, how long in-flight requests may finish",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="override server.workers: processes serving the port (0: one per core; default 1)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--log-format", default="json", choices=["json", "text"], help="log lines (default json)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("drain_timeout_s", args.drain_timeout),
            ("workers", args.workers),
        )
        if value is not None
    }
    # A reload re-reads the file with the same flags over it (gateway.reload).
    source = ConfigSource(Path(args.config), overrides)
    # Before the file is read: a SIGHUP from here on reloads once the app is up, not kills.
    signal.signal(signal.SIGHUP, remember_sighup)
    settings, version = source.load()
    configure_logging(args.log_level, json=args.log_format == "json")
    workers = worker_count(settings.server.workers)
    if workers > 1:
        return run_workers(settings, version, source, workers=workers, log_level=args.log_level)
    config = server_config(
        settings,
        log_level=args.log_level,
        log_config=None,
        source=source,
        version=version,
        reload_on_sighup=True,
    )
    ProcessServer(config).run()
    return 0
