"""Scripted upstreams for the θ-from-a-target tests: one OpenAI-compatible server on 127.0.0.1,
one path per endpoint, answering by the prompt's item number so quality can be set per pattern.

Item ``i`` of the prompt ``item i``: even items are unanimous at tier 0 (``positive`` thrice);
odd items are the ``k``-th 2/3 item (``k = i // 2``): ``small-a`` and ``small-b`` say
``positive``, ``small-c`` says ``negative``, and answers only once both others have answered, so
a tier waiting for unanimity escalates with two votes recorded, not one. The top tier
(``large``) agrees with tier 0's majority except on the 2/3 items that ``disagree(k)`` picks.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer, quiet_config

ENDPOINTS = ("small-a", "small-b", "small-c", "large")
_ITEM = re.compile(r"item (\d+)")


def every(n: int) -> Callable[[int], bool]:
    """One 2/3 item in ``n`` disagrees with the top tier: the last of each run of ``n``."""
    return lambda k: k % n == n - 1


class TargetUpstreams:
    def __init__(self) -> None:
        self.disagree: Callable[[int], bool] = lambda _: False
        self._majority_answered: dict[int, int] = defaultdict(int)
        self._majority_done: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        app = Starlette(routes=[Route("/{name}/v1/chat/completions", self._chat, methods=["POST"])])
        self._server = ThreadedServer(quiet_config(app), "target-upstreams")

    def base_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.port}/{name}/v1"

    def __enter__(self) -> TargetUpstreams:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    async def _chat(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = _ITEM.search((await request.body()).decode())
        if found is None:
            return Response('{"error": {"message": "no item"}}', status_code=400)
        item = int(found.group(1))
        unanimous, k = item % 2 == 0, item // 2
        if name == "large":
            content = "negative" if not unanimous and self.disagree(k) else "positive"
        elif name == "small-c" and not unanimous:
            await self._majority_done[item].wait()
            content = "negative"
        else:
            content = "positive"
        response = _completion(name, content)
        if name in ("small-a", "small-b") and not unanimous:
            # Set once this reply is on its way: small-c's then follows it.
            self._majority_answered[item] += 1
            if self._majority_answered[item] == 2:
                asyncio.get_running_loop().call_soon(self._majority_done[item].set)
        return response


def _completion(name: str, content: str) -> Response:
    payload = {
        "id": f"cmpl-{name}",
        "object": "chat.completion",
        "created": 0,
        "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
    return Response(json.dumps(payload), media_type="application/json")
