"""A stand-in for ``python -m gateway.evaluation.llama_server`` in zoo tests: it reads --port and
--model_alias, answers GET /v1/models, exits on SIGTERM, and fails at once for a --model path with
"missing" in it. Run as ``python tests/fake_llama_server.py -m gateway.evaluation.llama_server
--port N ...`` (the zoo's command line with this file in front)."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def _argument(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"data": [{"id": _argument("--model_alias")}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    if "missing" in _argument("--model"):
        sys.stdout.write("error loading model: no such file\n")
        sys.exit(3)
    HTTPServer(("127.0.0.1", int(_argument("--port"))), _Handler).serve_forever()
