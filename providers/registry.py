"""Every configured endpoint, as the provider its kind names."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from providers.llamacpp import LlamaCppProvider
from providers.openai_compat import OpenAIProvider
from providers.python_fn import PythonProvider
from providers.vllm import VLLMProvider

if TYPE_CHECKING:
    import httpx

    from gateway.config import EndpointConfig, Settings
    from providers.base import Provider

_HTTP_KINDS: dict[str, type[OpenAIProvider]] = {
    "openai": OpenAIProvider,
    "vllm": VLLMProvider,
    "llamacpp": LlamaCppProvider,
}


def build_providers(settings: Settings, client: httpx.AsyncClient) -> dict[str, Provider]:
    """Endpoint name → provider; a ConfigError from any of them stops the gateway starting."""
    return {endpoint.name: _build(endpoint, client) for endpoint in settings.endpoints}


def _build(endpoint: EndpointConfig, client: httpx.AsyncClient) -> Provider:
    if endpoint.kind == "python":
        return PythonProvider(endpoint)
    if endpoint.kind == "replay":
        # Imported only when configured: recordings are an evaluation tool, not the hot path.
        replay = importlib.import_module("providers.replay")
        provider: Provider = replay.ReplayProvider(endpoint)
        return provider
    return _HTTP_KINDS[endpoint.kind](endpoint, client)
