"""The gateway itself, served by uvicorn on 127.0.0.1 in a thread, for tests over real HTTP."""

from __future__ import annotations

from gateway.config import Settings
from gateway.serve import server_config
from tests.threaded_server import ThreadedServer


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # As `coe serve` serves it: the same protocol (431 on oversized heads) and options.
        self._server = ThreadedServer(server_config(settings), "gateway")
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def __enter__(self) -> GatewayServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(timeout_s=10)
