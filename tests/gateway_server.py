"""The gateway itself, served by uvicorn on 127.0.0.1 in a thread, for tests over real HTTP."""

from __future__ import annotations

import asyncio
import threading

import uvicorn

from gateway.config import Settings
from gateway.serve import loopback_socket, server_config


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._socket = loopback_socket()
        self.port = self._socket.getsockname()[1]
        # As `coe serve` serves it: the same protocol (431 on oversized heads) and options.
        self._server = uvicorn.Server(server_config(settings))
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def __enter__(self) -> GatewayServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway did not start")
            self._thread.join(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
