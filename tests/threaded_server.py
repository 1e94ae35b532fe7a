"""An ASGI app served by uvicorn on a free 127.0.0.1 port from a thread of the test process: the
scripted upstreams and the gateway itself, for tests over real HTTP."""

from __future__ import annotations

import asyncio
import threading

import uvicorn
from starlette.types import ASGIApp

from gateway.serve import loopback_socket


def quiet_config(app: ASGIApp) -> uvicorn.Config:
    """How the scripted upstreams are served: no lifespan, no access log."""
    return uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)


class ThreadedServer:
    def __init__(self, config: uvicorn.Config, name: str) -> None:
        self.name = name
        self._socket = loopback_socket()
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Return once the server listens (raise if its thread died first)."""
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the {self.name} server did not start")
            self._thread.join(0.005)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))
