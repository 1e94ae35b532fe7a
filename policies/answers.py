"""What a model's text answers: a label of the route's answer set, or None when it does not say.

Every task first drops reasoning: whatever precedes the last ``</think>`` (an opened ``<think>``
that never closes means the model ran out of tokens while thinking, so there is no answer). Then:

- ``classify`` and ``choice``: a JSON object's ``label``/``answer``/… field, or its only string
  field, stands for the whole text (an answer that is all JSON and has neither is unparsable;
  ``number`` reads JSON the same way); from the second line on, a line opening a new example
  (``Review:``, ``Question:``, ``Text:``…) ends the answer, because base models continue few-shot
  prompts with invented examples; then ``policies._closed`` reads the label (its docstring gives
  the rules). The label comes back spelled as configured.
- ``number``: ``#### N`` (GSM8K) wins, then ``\\boxed{N}``, then the number after the last
  "answer is"/"answer:", then the last number in the text. Thousands commas go ("1,234" → "1234"),
  decimals are canonical ("42.0" → "42", "3.50" → "3.5"), fractions stay as written ("3/4").
- ``regex``: the first match of the route's pattern; its group 1 when it has one, else the whole
  match, stripped.
- ``text``: whitespace collapsed, lowercased, punctuation stripped at both ends.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from policies._closed import label_set

Task = Literal["classify", "choice", "number", "regex", "text"]


@dataclass(frozen=True, slots=True)
class AnswerSpec:
    task: Task
    # classify: the labels; choice: the choice letters, e.g. ("A", "B", "C", "D").
    labels: tuple[str, ...] = ()
    # regex: group 1 when the pattern has one, else the whole match, is the answer.
    pattern: str | None = None
    # text: token F1 at or above which two answers count as the same.
    text_similarity: float = 0.8


_JSON_OBJECT = re.compile(r"(\{[^{}]*\})")
_WHOLE_JSON = re.compile(r"\s*+(?:```(?:json)?\s*+)?(\{.*\})\s*+(?:```)?\s*+", re.S | re.I)
_JSON_KEYS = (
    "label",
    "answer",
    "final_answer",
    "sentiment",
    "category",
    "class",
    "intent",
    "choice",
    "prediction",
    "output",
    "result",
)
_NEW_EXAMPLE = re.compile(
    r"\n[ \t\r>#*_-]*+(?:review|text|sentence|tweet|input|question|query|passage|document|example"
    r"|premise|hypothesis|context|headline|message|comment|post|utterance|q)"
    r"(?:[ \t]++\w++)?[ \t]*+\d*+[ \t]*+[*_]*+[ \t]*+:",
    re.I,
)
_NUMBER = r"[-−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?"
_ANY_NUMBER = re.compile(rf"(?<![\w.,]){_NUMBER}")
_GSM8K = re.compile(rf"####\s*+\$?\s*+({_NUMBER})")
_BOXED = re.compile(rf"\\boxed\{{\s*+\$?\s*+({_NUMBER})\s*+\}}")
_ANSWER_IS = re.compile(rf"\banswer\b\W{{0,3}}(?:is|=|:)[\s*$:]*+({_NUMBER})", re.I)
_TEXT_EDGES = string.punctuation + string.whitespace + "“”‘’«»…–—"


def normalise(text: str | None, spec: AnswerSpec) -> str | None:
    """The answer ``text`` gives under ``spec``, or None when it gives none we can read.

    Raises ``re.error`` for a regex task whose pattern does not compile (config checks it first).
    """
    if text is None:
        return None
    visible = _after_reasoning(text)
    if visible is None or not visible.strip():
        return None
    if spec.task == "regex":
        return _regex_answer(visible, spec.pattern or "")
    if spec.task == "text":
        return " ".join(visible.split()).lower().strip(_TEXT_EDGES) or None
    answer = _unwrap_json(visible)
    if answer is None:
        return None
    if spec.task == "number":
        return _number_answer(answer)
    if not spec.labels:
        return None
    if (cut := _NEW_EXAMPLE.search(answer)) is not None:
        answer = answer[: cut.start()]
    return label_set(spec.labels).read(answer)


def _after_reasoning(text: str) -> str | None:
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        return None
    return text


def _unwrap_json(text: str) -> str | None:
    whole = _WHOLE_JSON.fullmatch(text)
    found = whole or _JSON_OBJECT.search(text)
    if found is None:
        return text
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return text
    if not isinstance(value, dict):
        return text
    fields = {str(k).lower(): v for k, v in value.items()}
    for name in _JSON_KEYS:
        field = fields.get(name)
        if isinstance(field, str | int | float) and not isinstance(field, bool):
            return str(field)
    strings = [v for v in value.values() if isinstance(v, str)]
    if len(strings) == 1:
        return strings[0]
    # An answer given as JSON that names no answer says nothing; JSON inside prose may be aside.
    return None if whole else text


def _number_answer(text: str) -> str | None:
    for marked in (_GSM8K, _BOXED, _ANSWER_IS):
        hits = marked.findall(text)
        if hits:
            return _canonical_number(hits[-1])
    numbers = _ANY_NUMBER.findall(text)
    return _canonical_number(numbers[-1]) if numbers else None


def _canonical_number(raw: str) -> str:
    plain = raw.replace(",", "").replace("−", "-")
    if "/" in plain:
        return plain
    value = Decimal(plain)
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regex_answer(text: str, pattern: str) -> str | None:
    found = _compiled(pattern).search(text)
    if found is None:
        return None
    group = found.group(1) if found.re.groups and found.group(1) is not None else found.group(0)
    return group.strip() or None
