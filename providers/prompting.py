"""Per-endpoint prompt templates, so one model file can serve as several distinct ensemble members.

An endpoint may carry a system prompt and few-shot examples; they go before the client's messages.
llama.cpp's gemma chat format drops system messages, so for ``kind = "llamacpp"`` the system prompt
is put at the head of the first user turn instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from providers.endpoint import EndpointConfig


def build_messages(
    endpoint: EndpointConfig, messages: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The messages to send to ``endpoint`` for a client's ``messages``."""
    client_turns = [m if isinstance(m, dict) else dict(m) for m in messages]
    if endpoint.system_prompt is None and not endpoint.few_shot:
        return client_turns
    turns: list[dict[str, Any]] = []
    for example in endpoint.few_shot:
        turns.append({"role": "user", "content": example.user})
        turns.append({"role": "assistant", "content": example.assistant})
    turns.extend(client_turns)
    if endpoint.system_prompt is None:
        return turns
    if endpoint.kind == "llamacpp":
        return _into_first_user_turn(endpoint.system_prompt, turns)
    return [{"role": "system", "content": endpoint.system_prompt}, *turns]


def _into_first_user_turn(instruction: str, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for index, turn in enumerate(turns):
        if turn.get("role") != "user":
            continue
        content = turn.get("content")
        if isinstance(content, list):
            merged: Any = [{"type": "text", "text": instruction}, *content]
        else:
            merged = f"{instruction}\n\n{content}" if content else instruction
        turns[index] = {**turn, "content": merged}
        return turns
    return [{"role": "user", "content": instruction}, *turns]


def prompt_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    """Characters of the messages' text (string content, or the text parts of a list); billing
    estimates tokens from them when an upstream reports no usage."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return total
