"""The floor under any Python gateway on this stack: a bare ASGI app on uvicorn (uvloop, httptools).

    python -m bench.floor_app --port 8310 --mode proxy --upstream http://127.0.0.1:9100/v1

``--mode proxy`` forwards each POST body with one aiohttp call and returns the upstream's bytes: no
validation, routing, vote, billing, metrics or ledger. ``--mode answer`` returns a fixed chat
completion without an upstream call. bench/run.py measures both beside the gateway, so the
overhead targets can be read against what uvicorn and aiohttp alone cost on the same machine.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import uvicorn

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Receive = Callable[[], Awaitable[dict[str, Any]]]
    Send = Callable[[dict[str, Any]], Awaitable[None]]

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-floor",
        "object": "chat.completion",
        "created": 0,
        "model": "floor",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "positive"},
             "finish_reason": "stop"}
        ],
    }
)
_JSON = [(b"content-type", b"application/json")]
_UPSTREAM_HEADERS = {"content-type": "application/json"}


class FloorApp:
    def __init__(self, mode: str, upstream: str) -> None:
        self.mode = mode
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = ANSWER
        if self.mode == "proxy" and scope["method"] == "POST":
            assert self.session is not None
            post = self.session.post(self.url, data=body, headers=_UPSTREAM_HEADERS)
            async with post as response:
                answer = await response.read()
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": answer})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            else:
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["proxy", "answer"], required=True)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100/v1")
    args = parser.parse_args()
    uvicorn.run(
        FloorApp(args.mode, args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
