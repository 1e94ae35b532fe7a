"""schemathesis against a real ``coe serve``: thousands of generated requests, counting any 5xx.

Every operation of the served OpenAPI document, positive and negative cases, twice: once on a
gateway without tenants (no key needed) and once with tenants, sending a tenant's key.

    .venv/bin/python -m bench.fuzz --examples 500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import schemathesis

from gateway.tenants import new_key
from tests.conftest import UPSTREAM_NAMES, cascade_config
from tests.fuzzing import FuzzReport, fuzz, gateway_schema
from tests.gateway_process import GatewayProcess
from tests.upstream import UpstreamServer


def run(
    upstreams: dict[str, UpstreamServer], folder: Path, examples: int, *, tenants: bool
) -> FuzzReport:
    config: dict[str, Any] = cascade_config(upstreams, folder / "ledger.db")
    headers: dict[str, str] = {}
    if tenants:
        key, digest = new_key()
        config["tenants"] = [{"name": "fuzz", "api_key_sha256": [digest]}]
        headers["authorization"] = f"Bearer {key}"
    gateway = GatewayProcess(config, folder, name="tenants" if tenants else "open").start()
    try:
        return fuzz(gateway.url, gateway_schema(gateway.url, ["sentiment"]), examples, headers)
    finally:
        gateway.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500, help="per operation and mode")
    args = parser.parse_args(argv)
    upstreams = {name: UpstreamServer(name) for name in UPSTREAM_NAMES}
    for server in upstreams.values():
        server.start()
    figures: dict[str, Any] = {"schemathesis": schemathesis.__version__}
    try:
        for tenants in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                report = run(upstreams, Path(folder), args.examples, tenants=tenants)
            figures["tenants" if tenants else "open"] = {
                "cases": report.total,
                "by_operation": dict(report.cases),
                "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
                "server_errors": report.server_errors,
                "unanswerable_502": report.unanswerable,
                "unsendable": report.unsendable,
            }
    finally:
        for server in upstreams.values():
            server.stop()
    print(json.dumps(figures, indent=2))
    failed = any(figures[k]["server_errors"] for k in ("open", "tenants"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
