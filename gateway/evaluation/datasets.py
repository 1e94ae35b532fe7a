"""Evaluation data: the project's JSONL format, its reader, and converters for the public sets.

A data line is ``{"id": "...", "prompt": "..." | "messages": [...], "label": "..."}``. Converters
turn the files under ``shared/data/`` (SST-2, Twitter Financial News, CODAH, MMLU, BANKING77)
into it. Sets of recorded model answers (``gsm8k-zeroeval``: twelve LLMs on GSM8K) convert
instead to a full-information recording, RUN.jsonl (``RECORDED_SETS``).
Classification sets keep the bare text as the prompt: instructions and few-shot turns belong to each
endpoint (``system_prompt``, ``few_shot``), so cheap classifiers such as VADER see only the text.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.evaluation.zeroeval import convert_gsm8k_zeroeval

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from providers.recording import Recording

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    messages: tuple[Mapping[str, Any], ...]
    label: str

    @classmethod
    def from_prompt(cls, id_: str, prompt: str, label: str) -> Example:
        return cls(id=id_, messages=({"role": "user", "content": prompt},), label=label)

    def to_json(self) -> dict[str, Any]:
        """The data line: a single user turn is written as ``prompt``, anything else as messages."""
        if len(self.messages) == 1 and self.messages[0].get("role") == "user":
            content = self.messages[0].get("content")
            if isinstance(content, str):
                return {"id": self.id, "prompt": content, "label": self.label}
        return {"id": self.id, "messages": [dict(m) for m in self.messages], "label": self.label}


@dataclass(frozen=True, slots=True)
class DataProblem:
    line: int
    message: str

    def describe(self, source: str | Path) -> str:
        return f"{source}:{self.line}: {self.message}"


@dataclass(slots=True)
class DataScan:
    examples: list[Example] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)


def parse_example(raw: Any) -> Example:
    """Validate one decoded data line; a ValueError says what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError("a data line must be a JSON object")
    id_ = raw.get("id")
    if isinstance(id_, bool) or not isinstance(id_, str | int) or id_ == "":
        raise ValueError("'id' must be a non-empty string or an integer")
    label = raw.get("label")
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise ValueError("'label' must be a string")
    has_prompt, has_messages = "prompt" in raw, "messages" in raw
    if has_prompt == has_messages:
        raise ValueError("give exactly one of 'prompt' and 'messages'")
    if has_prompt:
        if not isinstance(raw["prompt"], str) or not raw["prompt"]:
            raise ValueError("'prompt' must be a non-empty string")
        return Example.from_prompt(str(id_), raw["prompt"], str(label))
    messages = raw["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{index}] must be an object with a 'role'")
        if "content" not in message:
            raise ValueError(f"messages[{index}] has no 'content'")
    return Example(id=str(id_), messages=tuple(messages), label=str(label))


def read_examples(path: Path) -> DataScan:
    """Read a data file, keeping every valid line and the line number of every bad one."""
    scan = DataScan()
    seen: set[str] = set()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                example = parse_example(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                scan.problems.append(DataProblem(number, f"not valid JSON ({exc})"))
                continue
            except ValueError as exc:
                scan.problems.append(DataProblem(number, str(exc)))
                continue
            if example.id in seen:
                scan.problems.append(DataProblem(number, f"id {example.id!r} appears twice"))
                continue
            seen.add(example.id)
            scan.examples.append(example)
    return scan


def write_examples(examples: Iterator[Example], out: Path) -> int:
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    path: str  # relative to the data folder
    description: str
    task: str
    labels: tuple[str, ...]
    read: Callable[[Path], Iterator[Example]]

    def convert(self, data_dir: Path) -> Iterator[Example]:
        source = data_dir / self.path
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such file or folder")
        return self.read(source)


def _tsv_rows(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


def _text_label_tsv(
    prefix: str, names: Mapping[str, str] | None
) -> Callable[[Path], Iterator[Example]]:
    def read(path: Path) -> Iterator[Example]:
        rows = _tsv_rows(path)
        next(rows)  # header: text, label
        for index, (text, label) in enumerate(rows):
            yield Example.from_prompt(
                f"{prefix}-{index}", text.strip(), names[label] if names else label
            )

    return read


def _text_label_csv(prefix: str, names: Mapping[str, str]) -> Callable[[Path], Iterator[Example]]:
    def read(path: Path) -> Iterator[Example]:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = csv.reader(handle)
            next(rows)
            for index, (text, label) in enumerate(rows):
                yield Example.from_prompt(f"{prefix}-{index}", text.strip(), names[label])

    return read


def _sst2_test(path: Path) -> Iterator[Example]:
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            label, _, text = line.rstrip("\n").partition(" ")
            yield Example.from_prompt(f"sst2-test-{index}", text.strip(), _SST2[label])


def _choice_prompt(stem: str, options: list[str], instruction: str) -> str:
    pairs = zip(LETTERS, options, strict=True)
    lines = [stem.strip(), *(f"{letter}. {option.strip()}" for letter, option in pairs)]
    return "\n".join(lines) + f"\n{instruction}"


def _codah(path: Path) -> Iterator[Example]:
    for index, row in enumerate(_tsv_rows(path)):
        stem, endings, answer = row[1], row[2:6], row[6]
        prompt = _choice_prompt(
            stem + " ...", endings, "Which ending is the most sensible? Answer with A, B, C or D."
        )
        yield Example.from_prompt(f"codah-{index}", prompt, LETTERS[int(answer)])


def _mmlu(split: str) -> Callable[[Path], Iterator[Example]]:
    def read(folder: Path) -> Iterator[Example]:
        for file in sorted(folder.glob(f"*_{split}.csv")):
            subject = file.name.removesuffix(f"_{split}.csv")
            topic = subject.replace("_", " ")
            with file.open(encoding="utf-8", newline="") as handle:
                for index, row in enumerate(csv.reader(handle)):
                    question, options, answer = row[0], row[1:5], row[5].strip()
                    stem = f"The following is a multiple choice question about {topic}.\n\n"
                    stem += question
                    prompt = _choice_prompt(stem, options, "Answer with A, B, C or D.")
                    yield Example.from_prompt(f"mmlu-{split}-{subject}-{index}", prompt, answer)

    return read


_SST2 = {"0": "negative", "1": "positive"}
_TFN = {"0": "bearish", "1": "bullish", "2": "neutral"}

_SETS = (
    Dataset("sst2-dev", "sst2/dev.tsv", "GLUE SST-2 dev set, 872 sentences",
            "classify", ("positive", "negative"), _text_label_tsv("sst2-dev", _SST2)),
    Dataset("sst2-train", "sst2/train.tsv", "GLUE SST-2 train (for few-shot examples only)",
            "classify", ("positive", "negative"), _text_label_tsv("sst2-train", _SST2)),
    Dataset("sst2-test", "sst2/test-labeled.txt", "labelled SST-2 test split, 1,821 sentences",
            "classify", ("positive", "negative"), _sst2_test),
    Dataset("tfn-valid", "twitter-financial-news/valid.csv",
            "Twitter Financial News validation split, 2,388 tweets",
            "classify", ("bearish", "bullish", "neutral"), _text_label_csv("tfn-valid", _TFN)),
    Dataset("tfn-train", "twitter-financial-news/train.csv", "Twitter Financial News train split",
            "classify", ("bearish", "bullish", "neutral"), _text_label_csv("tfn-train", _TFN)),
    Dataset("codah", "codah/full_data.tsv", "CODAH, 2,776 SWAG-style 4-ending questions",
            "choice", LETTERS, _codah),
    Dataset("mmlu-dev", "mmlu/dev", "MMLU dev (5 per subject), 285 questions",
            "choice", LETTERS, _mmlu("dev")),
    Dataset("mmlu-val", "mmlu/val", "MMLU validation (pre-release snapshot), 1,542 questions",
            "choice", LETTERS, _mmlu("val")),
    # 77 intent names: too many to list here; they are the distinct labels of the data.
    Dataset("banking77", "banking77/test.tsv", "BANKING77 test split, 3,080 queries",
            "classify", (), _text_label_tsv("banking77", None)),
)
DATASETS: dict[str, Dataset] = {d.name: d for d in _SETS}


@dataclass(frozen=True, slots=True)
class RecordedSet:
    """Recorded answers of real models: converted to a recording, not to data lines."""

    name: str
    path: str  # relative to the data folder
    description: str
    read: Callable[[Path], Recording]

    def convert(self, source: Path) -> Recording:
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such file or folder")
        return self.read(source)


RECORDED_SETS: dict[str, RecordedSet] = {
    "gsm8k-zeroeval": RecordedSet(
        "gsm8k-zeroeval", "gsm8k-zeroeval",
        "GSM8K test, 1,319 questions answered by 12 LLMs (ZeroEval): a recording",
        convert_gsm8k_zeroeval,
    ),
}
