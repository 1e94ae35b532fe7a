"""The evaluation data format, its reader, the converters and ``coe data convert``."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pytest

from gateway.commands import data as data_command
from gateway.evaluation.datasets import DATASETS, Example, parse_example, read_examples

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no ../shared/data here")


def test_a_prompt_line_becomes_one_user_turn() -> None:
    example = parse_example({"id": 7, "prompt": "great film", "label": "positive"})
    assert example == Example("7", ({"role": "user", "content": "great film"},), "positive")
    assert example.to_json() == {"id": "7", "prompt": "great film", "label": "positive"}


def test_a_messages_line_keeps_its_turns() -> None:
    messages = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]
    example = parse_example({"id": "a", "messages": messages, "label": "B"})
    assert example.messages == tuple(messages)
    assert example.to_json()["messages"] == messages


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"prompt": "x", "label": "y"}, "'id'"),
        ({"id": "1", "prompt": "x"}, "'label'"),
        ({"id": "1", "label": "y"}, "exactly one of"),
        ({"id": "1", "prompt": "x", "messages": [], "label": "y"}, "exactly one of"),
        ({"id": "1", "prompt": "", "label": "y"}, "non-empty string"),
        ({"id": "1", "messages": [{"content": "x"}], "label": "y"}, "'role'"),
    ],
)
def test_bad_lines_say_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_example(raw)


def test_the_reader_keeps_good_lines_and_numbers_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"id": "1", "prompt": "a", "label": "x"}\n'
        "\n"
        '{"id": "2", "prompt": "b"}\n'
        "{broken\n"
        '{"id": "1", "prompt": "c", "label": "x"}\n'
        '{"id": "3", "prompt": "d", "label": "y"}\n'
    )
    scan = read_examples(path)
    assert [e.id for e in scan.examples] == ["1", "3"]
    assert [p.line for p in scan.problems] == [3, 4, 5]
    assert scan.problems[0].describe(path) == f"{path}:3: 'label' must be a string"


@needs_data
@pytest.mark.parametrize(
    ("name", "rows", "labels"),
    [
        ("sst2-dev", 872, {"negative": 428, "positive": 444}),
        ("sst2-test", 1821, {"negative": 912, "positive": 909}),
        ("tfn-valid", 2388, {"bearish": 347, "bullish": 475, "neutral": 1566}),
        ("codah", 2776, {"A": 689, "B": 684, "C": 697, "D": 706}),
        ("mmlu-dev", 285, None),
        ("mmlu-val", 1542, None),
        ("banking77", 3080, None),
    ],
)
def test_converters_match_the_data_readme(
    name: str, rows: int, labels: dict[str, int] | None
) -> None:
    examples = list(DATASETS[name].convert(SHARED_DATA))
    assert len(examples) == rows
    assert len({e.id for e in examples}) == rows
    if labels is not None:
        assert dict(Counter(e.label for e in examples)) == labels
    if DATASETS[name].task == "choice":
        assert {e.label for e in examples} <= {"A", "B", "C", "D"}
        assert "\nD. " in str(examples[0].messages[0]["content"])


@needs_data
def test_banking77_has_77_intents() -> None:
    assert len({e.label for e in DATASETS["banking77"].convert(SHARED_DATA)}) == 77


def convert(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_command.register(parser.add_subparsers())
    args = parser.parse_args(["data", "convert", *argv])
    return int(args.func(args))


@needs_data
def test_cli_convert_writes_jsonl_the_reader_accepts(tmp_path: Path) -> None:
    out = tmp_path / "sst2.jsonl"
    assert convert("sst2-dev", "--out", str(out), "--data-dir", str(SHARED_DATA),
                   "--limit", "5") == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    assert json.loads(lines[0]) == {
        "id": "sst2-dev-0",
        "prompt": "it 's a charming and often affecting journey .",
        "label": "positive",
    }
    assert not read_examples(out).problems


def test_cli_convert_without_data_says_where_it_looked(tmp_path: Path) -> None:
    from gateway.errors import CoEError

    with pytest.raises(CoEError, match="pass --data-dir"):
        convert("sst2-dev", "--out", str(tmp_path / "x.jsonl"),
                "--data-dir", str(tmp_path / "missing"))


def test_the_evaluation_package_exports_a_sorted_public_api() -> None:
    import gateway.evaluation as evaluation

    assert evaluation.__all__ == sorted(evaluation.__all__)
    assert all(hasattr(evaluation, name) for name in evaluation.__all__)
