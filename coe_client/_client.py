"""The clients: the official SDK's own, pointed at a gateway, plus three helpers."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Self

from openai import NOT_GIVEN, AsyncOpenAI, NotGiven, OpenAI

from coe_client._requests import (
    COSTS_PATH,
    chat_request,
    coe_body,
    costs_params,
    read_result,
    resolve_api_key,
    resolve_base_url,
    route_or_default,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from openai.types.chat import ChatCompletionMessageParam

    from coe_client._types import CoEResult, GroupBy, Policy, Threshold

# The SDK reads OPENAI_ADMIN_KEY when no admin key is given, and would send it on admin-API
# calls: an empty one keeps OpenAI's credentials away from the gateway (SDKs before the admin
# key have no such parameter).
_TAKES_ADMIN_KEY = "admin_api_key" in inspect.signature(AsyncOpenAI.__init__).parameters


def _sdk_options(base_url: Any, api_key: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The SDK's constructor keywords: the gateway's URL and key, never OpenAI's from the
    environment, and the caller's other options as they are."""
    sdk = {**options, "base_url": resolve_base_url(base_url), "api_key": resolve_api_key(api_key)}
    if _TAKES_ADMIN_KEY and sdk.get("admin_api_key") is None:
        sdk["admin_api_key"] = ""
    return sdk


def _copy_options(route: str | None | NotGiven, current: str | None, options: dict[str, Any]
                  ) -> dict[str, Any]:
    """``copy``'s keywords, with the default route carried over unless ``route`` is given."""
    extra = dict(options.pop("_extra_kwargs", None) or {})
    extra["route"] = current if isinstance(route, NotGiven) else route
    return {**options, "_extra_kwargs": extra}


class CoEClient(AsyncOpenAI):
    """The official ``openai.AsyncOpenAI``, pointed at a CoE Gateway, with ``classify``,
    ``choose`` and ``costs`` added: every SDK call works on it as it is
    (``await coe.chat.completions.create(model="sentiment", ...)``, ``coe.models.list()``,
    ``with_raw_response``, ``with_options``, …).

    ``base_url`` is the gateway's ``/v1`` root (default: ``$COE_BASE_URL``, else
    ``http://127.0.0.1:8000/v1``); ``api_key`` defaults to ``$COE_API_KEY`` — never to
    ``OPENAI_API_KEY``. ``route`` is the helpers' default route. Other keywords go to
    ``openai.AsyncOpenAI`` as they are (``timeout``, ``max_retries``, ``http_client``,
    ``default_headers``, …).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        route: str | None = None,
        **openai_options: Any,
    ) -> None:
        super().__init__(**_sdk_options(base_url, api_key, openai_options))
        self.route = route

    @property
    def openai(self) -> Self:
        """The client itself, which is the SDK client; kept for code written when the SDK
        client was a separate attribute (``coe.openai.chat.completions.create(...)``)."""
        return self

    def copy(self, *, route: str | None | NotGiven = NOT_GIVEN, **options: Any) -> Self:
        """The SDK's ``copy`` (alias ``with_options``): a client with the same options but those
        given, keeping this one's default route unless ``route`` is given."""
        return super().copy(**_copy_options(route, self.route, options))

    with_options = copy

    async def aclose(self) -> None:
        """``close()``, under the name this client had before it was the SDK client."""
        await self.close()

    async def classify(
        self,
        prompt: str | Sequence[ChatCompletionMessageParam],
        *,
        labels: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Label ``prompt`` with one of ``labels`` (default: the route's labels)."""
        request = chat_request(
            route_or_default(route, self.route), prompt, coe_body("classify", labels),
            threshold, policy, max_tier, tags,
        )
        raw = await self.chat.completions.with_raw_response.create(**request)
        return read_result(raw.parse(), raw.request_id, raw.http_response)

    async def choose(
        self,
        question: str | Sequence[ChatCompletionMessageParam],
        *,
        choices: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Answer a multiple-choice ``question`` with one of ``choices`` (default: the route's,
        A–D unless it says otherwise)."""
        request = chat_request(
            route_or_default(route, self.route), question, coe_body("choice", choices),
            threshold, policy, max_tier, tags,
        )
        raw = await self.chat.completions.with_raw_response.create(**request)
        return read_result(raw.parse(), raw.request_id, raw.http_response)

    async def costs(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: GroupBy = "route",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The cost report (``GET /v1/coe/costs``) of the caller's tenant, or of ``tenant``
        for an admin key."""
        params = costs_params(since, until, group_by, tenant)
        report: dict[str, Any] = await self.get(
            COSTS_PATH, cast_to=dict[str, Any], options={"params": params}
        )
        return report


class CoE(OpenAI):
    """Synchronous twin of ``CoEClient`` for scripts and notebooks: the official
    ``openai.OpenAI``, pointed at a CoE Gateway, with the same constructor and helpers."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        route: str | None = None,
        **openai_options: Any,
    ) -> None:
        super().__init__(**_sdk_options(base_url, api_key, openai_options))
        self.route = route

    @property
    def openai(self) -> Self:
        """The client itself; kept for compatibility (see ``CoEClient.openai``)."""
        return self

    def copy(self, *, route: str | None | NotGiven = NOT_GIVEN, **options: Any) -> Self:
        """The SDK's ``copy`` (alias ``with_options``), keeping the default route unless
        ``route`` is given."""
        return super().copy(**_copy_options(route, self.route, options))

    with_options = copy

    def classify(
        self,
        prompt: str | Sequence[ChatCompletionMessageParam],
        *,
        labels: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Label ``prompt`` with one of ``labels`` (default: the route's labels)."""
        request = chat_request(
            route_or_default(route, self.route), prompt, coe_body("classify", labels),
            threshold, policy, max_tier, tags,
        )
        raw = self.chat.completions.with_raw_response.create(**request)
        return read_result(raw.parse(), raw.request_id, raw.http_response)

    def choose(
        self,
        question: str | Sequence[ChatCompletionMessageParam],
        *,
        choices: Sequence[str] | None = None,
        route: str | None = None,
        threshold: Threshold | None = None,
        policy: Policy | None = None,
        max_tier: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> CoEResult:
        """Answer a multiple-choice ``question`` with one of ``choices``."""
        request = chat_request(
            route_or_default(route, self.route), question, coe_body("choice", choices),
            threshold, policy, max_tier, tags,
        )
        raw = self.chat.completions.with_raw_response.create(**request)
        return read_result(raw.parse(), raw.request_id, raw.http_response)

    def costs(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        group_by: GroupBy = "route",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The cost report (``GET /v1/coe/costs``)."""
        params = costs_params(since, until, group_by, tenant)
        report: dict[str, Any] = self.get(
            COSTS_PATH, cast_to=dict[str, Any], options={"params": params}
        )
        return report
