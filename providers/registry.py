"""Every configured endpoint, as the provider its kind names."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from providers.anthropic import AnthropicProvider
from providers.breaker import BreakerPolicy, BreakerProvider
from providers.llamacpp import LlamaCppProvider
from providers.openai_compat import OpenAIProvider
from providers.python_fn import PythonProvider
from providers.vllm import VLLMProvider

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import httpx

    from providers.base import Provider
    from providers.breaker import BreakerState
    from providers.endpoint import EndpointConfig

# The adapter of each HTTP kind (providers.endpoint.HTTP_KINDS), built on the shared client.
_HTTP_KINDS: dict[str, Callable[[EndpointConfig, httpx.AsyncClient], Provider]] = {
    "openai": OpenAIProvider,
    "vllm": VLLMProvider,
    "llamacpp": LlamaCppProvider,
    "anthropic": AnthropicProvider,
}


def build_providers(
    endpoints: Sequence[EndpointConfig],
    client: httpx.AsyncClient,
    *,
    on_breaker_change: Callable[[str, BreakerState], None] | None = None,
) -> dict[str, Provider]:
    """Endpoint name → provider; an ``EndpointConfigError`` from any of them stops the gateway.

    HTTP endpoints sit behind a circuit breaker (``breaker_failures`` > 0), which reports each
    state it takes to ``on_breaker_change(endpoint, state)``.
    """
    return {
        endpoint.name: _guard(_build(endpoint, client), endpoint, on_breaker_change)
        for endpoint in endpoints
    }


def _guard(
    provider: Provider,
    endpoint: EndpointConfig,
    on_change: Callable[[str, BreakerState], None] | None,
) -> Provider:
    # In-process and recorded answers have no remote end to spare.
    if endpoint.kind not in _HTTP_KINDS or endpoint.breaker_failures == 0:
        return provider
    policy = BreakerPolicy(endpoint.breaker_failures, endpoint.breaker_cooldown_s)
    return BreakerProvider(provider, policy, on_state_change=on_change)


def _build(endpoint: EndpointConfig, client: httpx.AsyncClient) -> Provider:
    if endpoint.kind == "python":
        return PythonProvider(endpoint)
    if endpoint.kind == "replay":
        # Imported only when configured: recordings are an evaluation tool, not the hot path.
        replay = importlib.import_module("providers.replay")
        provider: Provider = replay.ReplayProvider(endpoint)
        return provider
    return _HTTP_KINDS[endpoint.kind](endpoint, client)
