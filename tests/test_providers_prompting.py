"""Per-endpoint prompt templates: system prompt, few-shot turns, llama.cpp's system merge."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from providers.endpoint import EndpointConfig
from providers.prompting import build_messages

USER = {"role": "user", "content": "Great film!"}
SHOTS = (
    {"user": "I loved it.", "assistant": "positive"},
    {"user": "Dull and long.", "assistant": "negative"},
)


def endpoint(kind: str = "openai", **fields: Any) -> EndpointConfig:
    return EndpointConfig.model_validate(
        {"name": "e", "kind": kind, "base_url": "http://127.0.0.1:1/v1", **fields}
    )


def test_without_a_template_messages_pass_through() -> None:
    messages = [USER, {"role": "assistant", "content": "positive"}]
    built = build_messages(endpoint(), messages)
    assert built == messages
    assert all(a is b for a, b in zip(built, messages, strict=True))


def test_non_dict_mappings_become_dicts() -> None:
    built = build_messages(endpoint(), [MappingProxyType(USER)])
    assert built == [USER]
    assert type(built[0]) is dict


def test_system_prompt_is_a_system_message_first() -> None:
    built = build_messages(endpoint(system_prompt="Answer positive or negative."), [USER])
    assert built == [{"role": "system", "content": "Answer positive or negative."}, USER]


def test_few_shot_examples_come_before_the_client_turns() -> None:
    built = build_messages(endpoint(few_shot=SHOTS, system_prompt="Classify."), [USER])
    assert built == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "I loved it."},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "Dull and long."},
        {"role": "assistant", "content": "negative"},
        USER,
    ]


def test_llamacpp_merges_the_system_prompt_into_the_first_user_turn() -> None:
    built = build_messages(endpoint("llamacpp", system_prompt="Classify."), [USER])
    assert built == [{"role": "user", "content": "Classify.\n\nGreat film!"}]
    assert USER == {"role": "user", "content": "Great film!"}


def test_llamacpp_with_few_shot_instructs_in_the_first_example() -> None:
    built = build_messages(endpoint("llamacpp", system_prompt="Classify.", few_shot=SHOTS), [USER])
    assert built[0] == {"role": "user", "content": "Classify.\n\nI loved it."}
    assert [m["role"] for m in built] == ["user", "assistant", "user", "assistant", "user"]
    assert built[-1] is USER


def test_llamacpp_merges_into_content_parts() -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "Great film!"}]}
    built = build_messages(endpoint("llamacpp", system_prompt="Classify."), [parts])
    assert built[0]["content"] == [
        {"type": "text", "text": "Classify."},
        {"type": "text", "text": "Great film!"},
    ]


def test_llamacpp_without_a_user_turn_gets_one() -> None:
    built = build_messages(endpoint("llamacpp", system_prompt="Classify."), [])
    assert built == [{"role": "user", "content": "Classify."}]
