"""Upstream adapters behind one seam: ``Provider.complete(CallRequest) -> CallRecord``."""

from providers.anthropic import AnthropicProvider
from providers.base import CallRecord, CallRequest, CallStatus, Provider, TokenLogprob
from providers.http import make_http_client
from providers.llamacpp import LlamaCppProvider
from providers.openai_compat import OpenAIProvider
from providers.python_fn import PythonProvider
from providers.registry import build_providers
from providers.retry import RetryPolicy
from providers.vllm import VLLMProvider

__all__ = [
    "AnthropicProvider",
    "CallRecord",
    "CallRequest",
    "CallStatus",
    "LlamaCppProvider",
    "OpenAIProvider",
    "Provider",
    "PythonProvider",
    "RetryPolicy",
    "TokenLogprob",
    "VLLMProvider",
    "build_providers",
    "make_http_client",
]
