"""A Python client for CoE Gateway: the official ``openai`` SDK's clients, pointed at a gateway.

``CoEClient`` (async) subclasses ``openai.AsyncOpenAI`` and ``CoE`` (sync) ``openai.OpenAI``, so
every SDK call works on them as it is, and they add three helpers: ``classify``, ``choose`` and
``costs``. Overrides travel as the ``x-coe-*`` headers (docs/api.md, "Headers"), labels and task
in the body's ``coe`` extension; errors surface as the SDK's own exceptions
(``openai.BadRequestError``, …).
"""

from coe_client._client import CoE, CoEClient
from coe_client._requests import (
    DEFAULT_BASE_URL,
    ENV_API_KEY,
    ENV_BASE_URL,
    format_threshold,
    override_headers,
)
from coe_client._types import (
    CallInfo,
    CoEResult,
    Decision,
    GroupBy,
    Policy,
    Threshold,
    Usage,
)

__all__ = [
    "CallInfo",
    "CoE",
    "CoEClient",
    "CoEResult",
    "DEFAULT_BASE_URL",
    "Decision",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "GroupBy",
    "Policy",
    "Threshold",
    "Usage",
    "format_threshold",
    "override_headers",
]
