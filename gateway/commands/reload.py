"""``coe reload``: make a running gateway re-read its config file, without a restart.

It asks ``POST /v1/coe/reload`` (an admin key: ``--api-key`` or ``$COE_API_KEY``) and prints the
version now serving; a refused reload (the file does not load, or changes what needs a restart)
prints why and exits 2, and the running config keeps serving. ``--config FILE`` checks FILE here
first, with the messages of a failed start, and finds the gateway at its ``[server]`` host and
port; ``--url`` names the gateway (another host, a container). ``kill -HUP`` on the ``coe serve``
process reloads as well, answering only in the gateway's log.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import httpx

from gateway.config import load_settings
from gateway.errors import CoEError

if TYPE_CHECKING:
    import argparse

API_KEY_ENV = "COE_API_KEY"
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reload", help="make a running gateway re-read its config", description=__doc__
    )
    parser.add_argument("--config", help="check this config file, and reach the gateway it names")
    parser.add_argument("--url", help="the gateway's root URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", help=f"an admin key (default: ${API_KEY_ENV})")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.config and not args.url:
        raise CoEError("give --config FILE (the gateway's config) or --url URL")
    url = args.url
    if args.config:
        # The messages of a failed start, before anything is sent.
        server = load_settings(args.config).server
        if url is None:
            host = _WILDCARD_HOSTS.get(server.host, server.host)
            url = f"http://{f'[{host}]' if ':' in host else host}:{server.port}"
    key = args.api_key or os.environ.get(API_KEY_ENV)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    target = url.rstrip("/").removesuffix("/v1") + "/v1/coe/reload"
    try:
        response = httpx.post(target, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise CoEError(f"could not reach the gateway at {target}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message") or response.text[:500]
        raise CoEError(f"reload refused ({response.status_code}): {message}")
    if body.get("changed"):
        sys.stdout.write(
            f"reloaded: config {body['config_version']} serving (was {body['previous_version']})\n"
        )
    else:
        sys.stdout.write(f"unchanged: config {body['config_version']} serving\n")
    return 0
