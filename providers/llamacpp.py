"""llama-cpp-python's OpenAI-compatible server: the answer constrained by a GBNF grammar.

Logprobs are sent for only when asked: they make a call there several times slower.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from providers._constants import GRAMMAR_MIN_MAX_TOKENS
from providers.openai_compat import OpenAIProvider

if TYPE_CHECKING:
    from providers.base import CallRequest


class LlamaCppProvider(OpenAIProvider):
    def _upstream_request_id(self, request_id: str) -> str:
        # llama-cpp-python's server answers 400 to an x-request-id that is not a UUID; a client's
        # own id is mapped to a stable UUID so the upstream's logs still join on it.
        try:
            return str(uuid.UUID(request_id))
        except ValueError:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"coe-request:{request_id}"))

    def _body(self, request: CallRequest) -> dict[str, Any]:
        body = super()._body(request)
        if request.answer_set:
            body["grammar"] = choice_grammar(request.answer_set)
            body["max_tokens"] = max(request.max_tokens, GRAMMAR_MIN_MAX_TOKENS)
        return body


@lru_cache(maxsize=64)
def choice_grammar(answers: tuple[str, ...]) -> str:
    """A GBNF grammar whose only sentences are ``answers``."""
    return "root ::= " + " | ".join(_gbnf_literal(answer) for answer in answers)


def _gbnf_literal(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'
