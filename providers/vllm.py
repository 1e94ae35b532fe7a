"""vLLM's OpenAI-compatible server: the answer constrained to the route's answer set.

vLLM's docs (features/structured_outputs): a chat request takes ``"structured_outputs": {"choice":
[...]}`` as an extra body field; ``guided_choice`` was its name until it was removed in v0.12.0.
A v0.12+ server given ``guided_choice`` accepts the request and drops the field (its log alone says
"output will NOT be constrained"), so the wrong field silently loses the constraint.

The field is therefore chosen by the server's version: before the first constrained call the
provider asks ``GET /version`` (once; the answer is cached for the provider's life) and
``choice_field`` decides. ``vllm_choice_field = "auto"`` (the default) follows the version; a forced
field is kept when the version cannot be read and corrected, with a WARNING naming the server's
version, when that version would ignore it. An unreadable version is logged at WARNING once and
asked again at most every ``VERSION_RETRY_S``.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal

import anyio
import httpx

from providers.openai_compat import OpenAIProvider
from providers.retry import DEFAULT_RETRY_POLICY

if TYPE_CHECKING:
    from providers.base import CallRecord, CallRequest
    from providers.endpoint import EndpointConfig
    from providers.retry import RetryPolicy

logger = logging.getLogger(__name__)

ChoiceField = Literal["structured_outputs", "guided_choice"]
# The release that removed guided_choice (and its siblings) in favour of structured_outputs.
STRUCTURED_OUTPUTS_SINCE = (0, 12)
VERSION_TIMEOUT_S = 5.0
VERSION_RETRY_S = 60.0
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a vLLM version string (``0.32.0``, ``0.11.2.dev3+g…``), else None."""
    match = _VERSION.match(text.strip())
    return (int(match[1]), int(match[2])) if match else None


def choice_field(
    configured: str, version: tuple[int, int] | None
) -> tuple[ChoiceField, str | None]:
    """The field to send and, when the configuration is overridden or unverifiable, why.

    ``configured`` is ``vllm_choice_field``: ``auto``, ``structured_outputs`` or ``guided_choice``;
    ``version`` the server's ``(major, minor)``, None when it could not be read.
    """
    if version is None:
        if configured == "auto":
            return "structured_outputs", "server version unknown: sending structured_outputs"
        return ("guided_choice" if configured == "guided_choice" else "structured_outputs"), None
    wanted: ChoiceField = (
        "structured_outputs" if version >= STRUCTURED_OUTPUTS_SINCE else "guided_choice"
    )
    if configured in ("auto", wanted):
        return wanted, None
    shown = f"{version[0]}.{version[1]}"
    if wanted == "structured_outputs":
        why = (
            f"vllm_choice_field = {configured!r} but the server is vLLM {shown}, which removed "
            "guided_choice in 0.12 and ignores it (answers would NOT be constrained): sending "
            "structured_outputs instead; set vllm_choice_field = 'auto'"
        )
    else:
        why = (
            f"vllm_choice_field = {configured!r} but the server is vLLM {shown}, which predates "
            "structured_outputs (0.12): sending guided_choice instead; set vllm_choice_field = "
            "'auto'"
        )
    return wanted, why


def server_root(base_url: str) -> str:
    """The server's root from an endpoint's ``…/v1`` base URL: ``/version`` lives there."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class VLLMProvider(OpenAIProvider):
    def __init__(
        self,
        endpoint: EndpointConfig,
        client: httpx.AsyncClient,
        *,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        super().__init__(endpoint, client, retry_policy=retry_policy)
        self._version_url = server_root(endpoint.base_url) + "/version"
        self._lock = anyio.Lock()
        self._field: ChoiceField | None = None
        self._retry_at = 0.0
        self._warned: set[str] = set()
        # Read by tests and operators: the version the server reported, once known.
        self.server_version: str | None = None

    async def complete(self, request: CallRequest) -> CallRecord:
        if request.answer_set and self._field is None:
            await self._resolve_field()
        return await super().complete(request)

    @property
    def choice_field(self) -> ChoiceField:
        """The field constrained calls send now (before the version is known: the fallback)."""
        if self._field is not None:
            return self._field
        return choice_field(self._endpoint.vllm_choice_field, None)[0]

    def _body(self, request: CallRequest) -> dict[str, Any]:
        body = super()._body(request)
        # Always: the confidence policy reads them, and vLLM returns them at little cost.
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
        if request.answer_set:
            choices = list(request.answer_set)
            if self.choice_field == "guided_choice":
                body["guided_choice"] = choices
            else:
                body["structured_outputs"] = {"choice": choices}
        return body

    async def _resolve_field(self) -> None:
        async with self._lock:
            if self._field is not None or anyio.current_time() < self._retry_at:
                return
            text = await self._read_version()
            version = parse_version(text) if text is not None else None
            field, why = choice_field(self._endpoint.vllm_choice_field, version)
            if version is None:
                self._retry_at = anyio.current_time() + VERSION_RETRY_S
                reason = "no answer" if text is None else f"unreadable version {text!r}"
                self._warn_once(
                    f"endpoint {self.name!r}: GET {self._version_url}: {reason}; "
                    f"sending {field} until the version is known"
                )
                return
            self.server_version = text
            self._field = field
            if why is not None:
                self._warn_once(f"endpoint {self.name!r} ({self._version_url}): {why}")

    async def _read_version(self) -> str | None:
        timeout = min(VERSION_TIMEOUT_S, self._endpoint.timeout_s)
        with anyio.move_on_after(timeout):
            try:
                response = await self._client.get(
                    self._version_url, headers=self._headers, timeout=timeout
                )
            # The probe must never fail a call: whatever goes wrong, the call goes on with the
            # fallback field (and the WARNING says so). respx raises AssertionError when unmocked.
            except (httpx.HTTPError, AssertionError) as exc:
                logger.debug("endpoint %s: version probe failed: %r", self.name, exc)
                return None
            if not response.is_success:
                return None
            try:
                version = response.json().get("version")
            except (ValueError, AttributeError):
                return None
            return version if isinstance(version, str) else None
        return None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning("%s", message)
