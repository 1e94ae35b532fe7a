"""``coe serve``'s server (``ProcessServer``): once the app has started, what it started with is
frozen out of the cyclic garbage collector, whose full collections would otherwise walk it all."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pytest

from gateway.config import parse_settings
from gateway.serve import ProcessServer, loopback_socket, server_config
from tests.conftest import cascade_config

if TYPE_CHECKING:
    import socket
    from pathlib import Path

    from tests.upstream import UpstreamServer


class _StopsOnceStarted(ProcessServer):
    """Records how many objects are frozen when startup is over, then stops."""

    frozen_at_start: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.frozen_at_start = gc.get_freeze_count()
        self.should_exit = True


@pytest.mark.anyio
async def test_the_heap_is_frozen_once_the_app_has_started(
    tmp_path: Path, upstreams: dict[str, UpstreamServer]
) -> None:
    settings = parse_settings(cascade_config(upstreams, tmp_path / "ledger.db"))
    server = _StopsOnceStarted(server_config(settings))
    listener = loopback_socket()
    gc.unfreeze()
    try:
        await server.serve(sockets=[listener])
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
        listener.close()
    assert server.started
    assert server.frozen_at_start is not None
    assert server.frozen_at_start > 0
