"""README.md and docs/api.md say only what is true: every fenced block of the README is checked.

Each fenced block is classified by its language, and a block of any other language fails:

- ``bash``: every command (lines joined at ``\\``, split at ``&&``, ``;`` and ``|``, comments and
  leading ``VAR=value`` assignments dropped) must be one this test knows: ``coe …`` parses with
  ``gateway.cli.build_parser()`` (the ``--help``-level check: sub-commands, flags, choices and
  required arguments; files need not exist), ``pip install`` names only extras of
  ``pyproject.toml``, ``python -m X`` names a module that exists, ``pytest`` runs the suite.
- ``toml``: a fragment is laid over ``config.example.toml`` (a ``[routes.X]`` or ``[[endpoints]]``
  or ``[[tenants]]`` entry replaces the example's entry of the same name, or is added; other
  tables replace the example's), with the ``"…"`` placeholder of a key digest read as a valid
  digest; the result must pass ``gateway.config.parse_settings``.
- ``python``: compiles, and every import resolves to a module holding the imported names.
- ``json``: parses once the ``, …`` ellipses are dropped.
- ``text``: a tree of the repository's layout; every path it names exists.

Inline code spans that start with ``coe `` must name a sub-command, and only flags it has.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import build_parser
from gateway.config import Settings, parse_settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
API_MD = ROOT / "docs" / "api.md"

_FENCE = re.compile(r"^```(\S*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_DIGEST_PLACEHOLDER = "…"
_A_DIGEST = "0" * 64


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.language or 'no language'})"


def blocks(text: str) -> list[Block]:
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
    ]


README_BLOCKS = blocks(README.read_text(encoding="utf-8"))


def _of(language: str) -> list[Block]:
    return [b for b in README_BLOCKS if b.language == language]


def _ids(found: list[Block]) -> list[str]:
    return [b.where for b in found]


# ---------------------------------------------------------------------------------------------
# Every block is one this test can check.

CHECKED = ("bash", "toml", "python", "json", "text")


def test_every_readme_block_has_a_language_this_test_checks() -> None:
    unknown = [b.where for b in README_BLOCKS if b.language not in CHECKED]

    assert README_BLOCKS, "no fenced blocks found in README.md"
    assert not unknown, f"README blocks this test cannot check (add a checker): {unknown}"


# ---------------------------------------------------------------------------------------------
# bash


def shell_commands(script: str) -> list[list[str]]:
    """The commands of a bash block, as argv lists."""
    joined = re.sub(r"\\\n", " ", script)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["project"]["optional-dependencies"])


_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+|\.)\[(?P<extras>[^\]]*)\]$")


def check_pip(argv: list[str]) -> None:
    assert argv[1] == "install", f"only 'pip install' is expected: {argv}"
    known = extras()
    specs = [a for a in argv[2:] if not a.startswith("-")]
    assert specs, f"pip install of nothing: {argv}"
    for spec in specs:
        match = _SPEC.match(spec)
        if match is None:
            assert spec in (".", "coe-gateway"), f"pip install of an unknown package: {spec}"
            continue
        assert match["name"] in (".", "coe-gateway"), f"pip install of another package: {spec}"
        wanted = {e.strip() for e in match["extras"].split(",") if e.strip()}
        assert wanted <= known, f"{spec}: no extra {sorted(wanted - known)} in pyproject.toml"


def check_python_module(argv: list[str]) -> None:
    assert len(argv) >= 3 and argv[1] == "-m", f"only 'python -m MODULE' is expected: {argv}"
    module = argv[2]
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(module.split(".")[0])
    assert spec is not None, f"python -m {module}: no such module"
    if "." in module:
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").exists() or (
            importlib.util.find_spec(module) is not None
        ), f"python -m {module}: no such module"


def parse_coe(argv: list[str]) -> argparse.Namespace:
    """``coe ARGS`` parsed as the CLI parses it, without running anything."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports and exits 2 on a usage error
        raise AssertionError(f"'coe {shlex.join(argv)}' does not parse (exit {exc.code})") from None


def check_command(argv: list[str]) -> None:
    program = Path(argv[0]).name
    if program == "coe":
        parse_coe(argv[1:])
    elif program == "pip":
        check_pip(argv)
    elif program in ("python", "python3"):
        check_python_module(argv)
    elif program in ("pytest", "lint-imports"):
        pass
    elif "/" in argv[0] and not argv[0].startswith(".venv/"):
        # A script of the repository's own, e.g. tests/vllm_env.sh.
        script = ROOT / argv[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{argv[0]}: no such script"
    else:
        raise AssertionError(f"a README command this test does not know: {shlex.join(argv)}")


@pytest.mark.parametrize("block", _of("bash"), ids=_ids(_of("bash")))
def test_bash_blocks_run_only_commands_that_exist(block: Block) -> None:
    commands = shell_commands(block.text)

    assert commands, f"{block.where}: no command"
    for argv in commands:
        check_command(argv)


def test_the_bash_checks_catch_what_they_are_for() -> None:
    assert shell_commands("A=1 B=2 .venv/bin/coe demo && x \\\n  --y  # z") == [
        [".venv/bin/coe", "demo"], ["x", "--y"]
    ]
    with pytest.raises(AssertionError):
        check_command(["coe", "data", "convert", "twitter-financial-news", "--out", "x.jsonl"])
    with pytest.raises(AssertionError):
        check_command(["coe", "serve", "--config", "c.toml", "--no-such-flag"])
    with pytest.raises(AssertionError):
        check_command(["pip", "install", "-e", ".[test,no-such-extra]"])
    with pytest.raises(AssertionError):
        check_command(["python", "-m", "bench.no_such_module"])
    with pytest.raises(AssertionError):
        check_command(["curl", "http://127.0.0.1:8000/healthz"])
    with pytest.raises(AssertionError):
        check_command(["tests/no_such_script.sh"])
    with pytest.raises(AssertionError):
        check_inline_coe("coe demo --no-such-flag")
    with pytest.raises(AssertionError):
        check_inline_coe("coe no-such-command --config FILE")
    check_inline_coe("coe report --format table|json|csv")


# ---------------------------------------------------------------------------------------------
# toml


def _entries_by_name(base: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[Any]:
    merged = {entry["name"]: entry for entry in base}
    merged.update({entry["name"]: entry for entry in extra})
    return list(merged.values())


def _fill_digests(table: dict[str, Any]) -> dict[str, Any]:
    digests = table.get("api_key_sha256")
    if digests is None:
        return table
    filled = [_A_DIGEST if d == _DIGEST_PLACEHOLDER else d for d in digests]
    return {**table, "api_key_sha256": filled}


def over_example(fragment: dict[str, Any]) -> dict[str, Any]:
    """A README TOML fragment laid over config.example.toml (see the module docstring)."""
    raw = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    for key, value in fragment.items():
        if key in ("endpoints", "tenants"):
            raw[key] = _entries_by_name(raw.get(key, []), value)
        elif key == "routes":
            raw["routes"] = {**raw.get("routes", {}), **value}
        else:
            raw[key] = value
    raw["tenants"] = [_fill_digests(t) for t in raw.get("tenants", [])]
    if "admin" in raw:
        raw["admin"] = _fill_digests(raw["admin"])
    return raw


@pytest.mark.parametrize("block", _of("toml"), ids=_ids(_of("toml")))
def test_toml_blocks_are_valid_config(block: Block) -> None:
    fragment = tomllib.loads(block.text)

    settings = parse_settings(over_example(fragment), source=block.where)

    assert isinstance(settings, Settings)
    for name, route in fragment.get("routes", {}).items():
        assert settings.routes[name].tiers == tuple(tuple(t) for t in route["tiers"])
    for endpoint in fragment.get("endpoints", []):
        assert settings.endpoint(endpoint["name"]).kind == endpoint.get("kind", "openai")


# ---------------------------------------------------------------------------------------------
# python


def imported_names(tree: ast.AST) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None and node.level == 0, "relative import in the README"
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("block", _of("python"), ids=_ids(_of("python")))
def test_python_blocks_compile_and_their_imports_resolve(block: Block) -> None:
    code = compile(block.text, block.where, "exec", ast.PyCF_ONLY_AST)
    compile(block.text, block.where, "exec")

    for module, name in imported_names(code):
        imported = importlib.import_module(module)
        if name is not None:
            assert hasattr(imported, name), f"{block.where}: {module} has no {name}"


# ---------------------------------------------------------------------------------------------
# json and text


@pytest.mark.parametrize("block", _of("json"), ids=_ids(_of("json")))
def test_json_blocks_parse(block: Block) -> None:
    json.loads(re.sub(r",\s*…", "", block.text))


@pytest.mark.parametrize("block", _of("text"), ids=_ids(_of("text")))
def test_layout_blocks_name_paths_that_exist(block: Block) -> None:
    paths = [line.split()[0] for line in block.text.splitlines() if re.match(r"^\S+/", line)]

    assert paths, f"{block.where}: no paths"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{block.where} names paths that do not exist: {missing}"


# ---------------------------------------------------------------------------------------------
# Inline `coe …` spans: the sub-command exists and has each flag named.


def leaf_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the sub-command ``words`` start with, and the words after it."""
    parser = build_parser()
    rest = list(words)
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return parser, rest
        assert rest and rest[0] in subs[0].choices, f"no sub-command 'coe {' '.join(words)}'"
        parser = subs[0].choices[rest.pop(0)]


def inline_coe_commands(text: str) -> list[str]:
    return [m.group(1) for m in _INLINE.finditer(text) if m.group(1).startswith("coe ")]


def check_inline_coe(span: str) -> None:
    words = span.split()[1:]
    if words == ["COMMAND"] or words[:1] == ["--help"]:
        return
    parser, _ = leaf_parser([w for w in words if not w.startswith("-")])
    flags = {o for action in parser._actions for o in action.option_strings}
    for word in words:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            assert flag in flags, f"`{span}`: {flag} is not an option of this command"


def test_inline_coe_commands_name_real_sub_commands_and_flags() -> None:
    spans = inline_coe_commands(README.read_text(encoding="utf-8"))

    assert spans
    for span in spans:
        check_inline_coe(span)


# ---------------------------------------------------------------------------------------------
# docs/api.md: every sub-command, flag and config key is documented.


def all_commands() -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        found.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")

    walk(build_parser(), "coe")
    return found


def test_api_md_names_every_sub_command_and_flag() -> None:
    doc = API_MD.read_text(encoding="utf-8")
    missing: list[str] = []
    for path, parser in all_commands():
        if path != "coe" and f"### {path}" not in doc and f"`{path}`" not in doc:
            missing.append(path)
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help") and f"`{option}`" not in doc.split(
                    f"### {path}", 1
                )[-1]:
                    missing.append(f"{path} {option}")
    assert not missing, (
        f"docs/api.md does not document: {missing} (run: python docs/gen_cli.py --write)"
    )


def test_api_md_names_every_config_key() -> None:
    from tests.test_config_example import models_under

    doc = API_MD.read_text(encoding="utf-8")
    missing = [
        f"{model.__name__}.{name}"
        for model in models_under(Settings)
        for name in model.model_fields
        if not any(form in doc for form in (f"`{name}`", f"`[{name}]", f"`[[{name}]]`",
                                            f"`[{name}."))
    ]

    assert not missing, f"docs/api.md does not document the config keys {missing}"


def test_api_md_cli_section_is_what_gen_cli_writes() -> None:
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)

    doc = API_MD.read_text(encoding="utf-8")
    written = doc.split(gen_cli.BEGIN, 1)[1].split(gen_cli.END, 1)[0].strip()

    assert written == gen_cli.section().strip(), "run: python docs/gen_cli.py --write"
