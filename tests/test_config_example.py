"""``config.example.toml`` documents every key of every config model, and is itself a valid config.

The walk starts at ``Settings`` and follows every field whose type holds another config model
(``endpoints`` → ``EndpointConfig`` → ``few_shot`` → ``FewShotExample``, ``routes`` →
``RouteConfig``, …), so a key added to any model fails here until the example shows it. A key may
be shown commented out (``# budget_usd = 100.0``) where it must not be active, as a table header
(``[pricing.gpu_hour_usd]``, ``[[endpoints]]``) or inside an inline table
(``few_shot = [{ user = "…", assistant = "…" }]``).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from gateway.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"

_HEADER = re.compile(r"^\[\[?\s*([\w.]+)\s*\]\]?")
_KEY = re.compile(r"^(\w+)\s*=")
_INLINE_KEY = re.compile(r"[{,]\s*(\w+)\s*=")


def models_under(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every config model reachable through its fields' types, each once."""
    found: list[type[BaseModel]] = []

    def visit(annotation: object) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for argument in typing.get_args(annotation):
            visit(argument)

    visit(model)
    return found


def _code(line: str) -> str:
    """The line without its trailing comment (a "#" outside a quoted string)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index]
    return line


def documented_keys(text: str) -> set[str]:
    """Every key name the file shows: active or commented, as a key, table header or inline."""
    keys: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        # A commented-out key or table: "# name = ..." or "# [[tenants]]" (one level of "#").
        line = _code(line[1:].strip() if line.startswith("#") else line).strip()
        if header := _HEADER.match(line):
            keys.update(header.group(1).split("."))
        elif key := _KEY.match(line):
            keys.add(key.group(1))
            keys.update(_INLINE_KEY.findall(line))
    return keys


def test_the_walk_reaches_every_config_model() -> None:
    names = {model.__name__ for model in models_under(Settings)}

    assert names >= {
        "Settings", "ServerConfig", "LedgerConfig", "PricingConfig", "EndpointConfig",
        "FewShotExample", "RouteConfig", "TenantConfig", "AdminConfig",
    }


def test_every_key_of_every_config_model_is_in_the_example() -> None:
    keys = documented_keys(EXAMPLE.read_text(encoding="utf-8"))

    missing = [
        f"{model.__name__}.{name}"
        for model in models_under(Settings)
        for name in model.model_fields
        if name not in keys
    ]

    assert not missing, f"config.example.toml does not show: {', '.join(missing)}"


def test_the_key_reader_sees_commented_and_inline_keys() -> None:
    text = (
        "[server]\nport = 8000  # not_a_key = 1\n# [[tenants]]\n# budget_usd = 100.0\n"
        '# few_shot = [{ user = "a", assistant = "b" }]   # turns\n'
    )

    assert documented_keys(text) == {
        "server", "port", "tenants", "budget_usd", "few_shot", "user", "assistant"
    }


def test_the_example_is_a_valid_config() -> None:
    settings = load_settings(EXAMPLE)

    assert settings.routes["sentiment"].tiers == (("small-a", "small-b", "small-c"), ("large",))
