"""One HTTP endpoint's POSTs, as every HTTP adapter makes them: its key from the environment, its
concurrency limit, a timeout over the whole call (retries included) and its retry rules."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import anyio
import httpx

from providers._constants import CONNECT_TIMEOUT_S
from providers.errors import EndpointConfigError
from providers.http import SharedClient
from providers.retry import send_with_retries

if TYPE_CHECKING:
    from collections.abc import Mapping

    from providers.endpoint import EndpointConfig
    from providers.retry import Outcome, RetryPolicy


def api_key(endpoint: EndpointConfig) -> str | None:
    """The key named by ``api_key_env``; None without one, and an error when it is unset."""
    if endpoint.api_key_env is None:
        return None
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise EndpointConfigError(
            f"endpoint {endpoint.name!r}: environment variable "
            f"{endpoint.api_key_env!r} (api_key_env) is not set or empty"
        )
    return key


class EndpointPoster:
    def __init__(
        self,
        endpoint: EndpointConfig,
        client: httpx.AsyncClient,
        url: str,
        retry_policy: RetryPolicy,
    ) -> None:
        self.url = url
        self._endpoint = endpoint
        self._client = client
        # With an aiohttp transport, calls skip httpx's client layer (bench/RESULTS.md).
        self._direct = client.direct if isinstance(client, SharedClient) else None
        self._retry_policy = retry_policy
        # The endpoint's timeout_s bounds the whole call (retries included) through a cancel
        # scope; httpx only bounds connecting, so a dead host leaves time for another try.
        self._timeout = httpx.Timeout(None, connect=min(CONNECT_TIMEOUT_S, endpoint.timeout_s))
        self._limiter = anyio.CapacityLimiter(endpoint.max_concurrency)

    async def post(self, content: bytes, headers: Mapping[str, str]) -> tuple[Outcome | None, int]:
        """POST ``content`` with the retry rules; the last outcome (None: ``timeout_s`` passed
        first) and the number of attempts made."""
        attempts = 0

        async def send() -> Outcome:
            nonlocal attempts
            attempts += 1
            try:
                # acquire_nowait first: the common, uncontended case then skips a trip through
                # the event loop that ``async with`` would make.
                self._limiter.acquire_nowait()
            except anyio.WouldBlock:
                await self._limiter.acquire()
            try:
                if self._direct is not None:
                    return await self._direct.post(self.url, content, headers, self._timeout)
                return await self._client.post(
                    self.url, content=content, headers=headers, timeout=self._timeout
                )
            except httpx.RequestError as exc:
                return exc
            finally:
                self._limiter.release()

        outcome: Outcome | None = None
        with anyio.move_on_after(self._endpoint.timeout_s) as scope:
            outcome = await send_with_retries(
                send,
                max_retries=self._endpoint.max_retries,
                remaining_s=lambda: scope.deadline - anyio.current_time(),
                policy=self._retry_policy,
            )
        return outcome, attempts
