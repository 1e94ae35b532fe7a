"""llama-cpp-python's OpenAI-compatible server: the answer constrained by a GBNF grammar.

Logprobs are sent for only when asked: they make a call there several times slower.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from providers._constants import GRAMMAR_MIN_MAX_TOKENS
from providers.openai_compat import OpenAIProvider

if TYPE_CHECKING:
    from providers.base import CallRequest


class LlamaCppProvider(OpenAIProvider):
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
