"""What a model's text answers: a label of the route's answer set, or None when it does not say.

Every task first drops reasoning: whatever precedes the last ``</think>`` (an opened ``<think>``
that never closes means the model ran out of tokens while thinking, so there is no answer). Then:

- JSON, for ``classify``, ``choice`` and ``number`` alike: a JSON object's ``spec.json_field``
  (a structured-output request's answer field), its ``label``/``answer``/…
  field, or the only string field of the only object, stands for the whole text, wherever the
  object sits (alone, in a fenced block, or with commentary before or after it: the commentary is
  the model talking about its answer, and its numbers are steps, not the answer). JSON is read
  leniently, as models write it: raw line breaks inside strings are allowed, and JSON too broken
  to parse (an unescaped ``"`` in the reasoning) still gives its ``"answer": …`` pair. Unsure is
  None: an answer field holding a list, an object or a boolean; several answers that read
  differently (a "correction" could as well be an alternative); an answer that is all JSON and
  names no answer; a JSON object begun, not read and with no answer pair (cut off by the token
  limit, or too broken to trust).
- ``classify`` and ``choice``: from the second line on, a line opening a new example
  (``Review:``, ``Question:``, ``Text:``…) ends the answer, because base models continue few-shot
  prompts with invented examples; then ``policies._closed`` reads the label (its docstring gives
  the rules). The label comes back spelled as configured.
- ``number``: ``#### N`` (GSM8K) wins, then ``\\boxed{N}``, then the number after the last
  "answer is"/"answer:", then, in free text, the last number. A JSON answer field is the answer
  itself, so it must hold one number (units may follow: "53 feet", "$9,500", "25%"), or a
  calculation ending in "= N"; a field naming several ("4 blue and 6 red", "3 1/3", "7 hours and
  30 minutes") or an expression ("x + 3") is unparsable. Thousands commas go ("1,234" → "1234"),
  decimals are canonical ("42.0" → "42", "3.50" → "3.5"), fractions stay as written ("3/4"). A
  clock time on the hour reads as its hour ("2:00 pm" → "2", as GSM8K's labels do); any other
  clock time ("2:10") is not one number, so it reads as None rather than as its minutes.
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
    # A structured-output request's answer field: a JSON object's value under it is the answer,
    # before the usual ``label``/``answer``/… names.
    json_field: str | None = None


# strict=False: models put raw line breaks inside JSON strings (multi-line reasoning), which
# strict JSON refuses; refusing them threw the whole answer back to "the last number in the text".
_LENIENT_JSON = json.JSONDecoder(strict=False)
# Where a JSON object can start: "{" then a key or "}". LaTeX's braces ("\\frac{1}{2}") are no
# candidates, so they cannot use up the tries before the real object.
_OBJECT_START = re.compile(r'\{(?=\s*+["}])')
# Each failed try costs up to the rest of the text; a cap keeps hostile text about linear.
_MAX_JSON_TRIES = 32
_FENCE_BEFORE = re.compile(r"\s*+(?:```(?:json)?\s*+)?", re.I)
_FENCE_AFTER = re.compile(r"\s*+(?:```\s*+)?")
# An object begun with a key ('{"reasoning": ...'), to tell whether one went unread.
_JSON_OPENED = re.compile(r'\{\s*+"[^"\n]{1,40}"\s*+:')
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
# A key: value pair in JSON too broken to parse; the value quoted (escapes kept) or bare.
_BROKEN_PAIR = re.compile(
    r'"(' + "|".join(_JSON_KEYS) + r')"\s*+:\s*+(?:"((?:[^"\\]|\\.)*+)"|([^\s,{}\[\]"]++))', re.I
)
_NEW_EXAMPLE = re.compile(
    r"\n[ \t\r>#*_-]*+(?:review|text|sentence|tweet|input|question|query|passage|document|example"
    r"|premise|hypothesis|context|headline|message|comment|post|utterance|q)"
    r"(?:[ \t]++\w++)?[ \t]*+\d*+[ \t]*+[*_]*+[ \t]*+:",
    re.I,
)
# A sign may stand before a currency symbol: "-$6" is minus six, not six.
_NUMBER = r"(?:[-−]\$?)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?"
# A clock time is one token, so "2:10" is never read as the number 10.
_CLOCK = r"\d{1,2}:\d\d(?::\d\d)?(?!\d)"
_TOKEN = rf"(?:{_CLOCK}|{_NUMBER})"
_ANY_NUMBER = re.compile(rf"(?<![\w.,]){_TOKEN}")
_GSM8K = re.compile(rf"####\s*+\$?\s*+({_TOKEN})")
_BOXED = re.compile(rf"\\boxed\{{\s*+\$?\s*+({_TOKEN})\s*+\}}")
_ANSWER_IS = re.compile(rf"\banswer\b\W{{0,3}}(?:is|=|:)[\s*$:]*+({_TOKEN})", re.I)
# Arithmetic left in an answer field after its last "=": an expression, not a result. ("-" and
# "/" are left out: they are signs, fractions and units, as in "-$6" and "525 calories/day".)
_ARITHMETIC = re.compile(r"[+*×÷^]")
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
    unwrapped = _unwrap_json(visible, spec.json_field)
    if unwrapped is None:
        return None
    answers, is_field = unwrapped
    # Several JSON answers count when they read the same ("16" and 16.0); else we are unsure.
    readings = {_closed_or_number(answer, spec, field=is_field) for answer in answers}
    return readings.pop() if len(readings) == 1 else None


def _closed_or_number(answer: str, spec: AnswerSpec, *, field: bool) -> str | None:
    if spec.task == "number":
        return _number_answer(answer, field=field)
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


def _unwrap_json(text: str, field: str | None = None) -> tuple[list[str], bool] | None:
    """The texts to read (one, or each JSON answer given) and whether they are JSON answer fields.

    None when the JSON says no readable answer.
    """
    objects = _json_objects(text)
    answers = [
        _field_answer(value, field) for _, _, value in objects
        if _named_key(value, field) is not None
    ]
    if not answers:
        answers = _broken_pairs(text)
    if answers:
        given = [answer for answer in answers if answer is not None]
        # One unreadable answer field (a list, an object, "") makes the whole answer unsure.
        return (given, True) if len(given) == len(answers) else None
    # A JSON object begun but not read, with no answer pair in it, is an answer cut off by the
    # token limit (like a <think> never closed) or too broken to trust: its numbers are steps.
    spans = [(start, end) for start, end, _ in objects]
    for opened in _JSON_OPENED.finditer(text):
        if not any(start <= opened.start() < end for start, end in spans):
            return None
    if not objects:
        return [text], False
    strings = [v for v in objects[0][2].values() if isinstance(v, str)]
    if len(objects) == 1 and len(strings) == 1:
        return strings, True
    start, end, _ = objects[0]
    whole = (
        len(objects) == 1
        and _FENCE_BEFORE.fullmatch(text, 0, start) is not None
        and _FENCE_AFTER.fullmatch(text, end) is not None
    )
    # An answer given as JSON that names no answer says nothing; JSON inside prose may be aside.
    return None if whole else ([text], False)


def _json_objects(text: str) -> list[tuple[int, int, dict[str, object]]]:
    """The JSON objects in ``text`` (start, end, value), outermost only, in order."""
    found: list[tuple[int, int, dict[str, object]]] = []
    candidate = _OBJECT_START.search(text)
    for _ in range(_MAX_JSON_TRIES):
        if candidate is None:
            break
        start = candidate.start()
        try:
            value, end = _LENIENT_JSON.raw_decode(text, start)
        except (ValueError, RecursionError):  # RecursionError: hostile nesting, "[[[[…"
            candidate = _OBJECT_START.search(text, start + 1)
            continue
        if isinstance(value, dict):
            found.append((start, end, value))
        candidate = _OBJECT_START.search(text, end)
    return found


def _named_key(value: dict[str, object], field: str | None = None) -> str | None:
    if field is not None and field in value:
        return field
    keys = {str(k).lower(): k for k in value}
    return next((keys[name] for name in _JSON_KEYS if name in keys), None)


def _field_answer(value: dict[str, object], field: str | None = None) -> str | None:
    """The object's answer field as text; None when it holds a list, an object or a boolean."""
    key = _named_key(value, field)
    answer = value[key] if key is not None else None
    if isinstance(answer, str | int | float) and not isinstance(answer, bool):
        return str(answer)
    return None


def _broken_pairs(text: str) -> list[str | None]:
    """The values of the best-ranked answer key's pairs in JSON too broken to parse."""
    pairs = _BROKEN_PAIR.findall(text)
    if not pairs:
        return []
    rank = {name: i for i, name in enumerate(_JSON_KEYS)}
    best = min(rank[key.lower()] for key, _, _ in pairs)
    return [quoted or bare or None for key, quoted, bare in pairs if rank[key.lower()] == best]


def _number_answer(text: str, *, field: bool) -> str | None:
    for marked in (_GSM8K, _BOXED, _ANSWER_IS):
        hits = marked.findall(text)
        if hits:
            return _canonical_number(hits[-1])
    if not field:
        # Free text works towards its answer, so its last number is the likeliest one.
        numbers = _ANY_NUMBER.findall(text)
        return _canonical_number(numbers[-1]) if numbers else None
    # A JSON answer field is the answer itself: a calculation's result after its last "=", else
    # exactly one number; two ("86 glasses and 42 plates") or arithmetic ("x + 3") is unsure.
    result = text.rsplit("=", 1)[-1]
    if _ARITHMETIC.search(result):
        return None
    values = {_canonical_number(raw) for raw in _ANY_NUMBER.findall(result)}
    return values.pop() if len(values) == 1 else None


def _canonical_number(raw: str) -> str | None:
    if ":" in raw:
        # A clock time on the hour is that hour (GSM8K labels "2:00 pm" as 2); with minutes it is
        # not one number, and reading its minutes as the answer would be a misread.
        hour, *rest = raw.split(":")
        return str(int(hour)) if all(int(part) == 0 for part in rest) else None
    plain = raw.replace(",", "").replace("−", "-").replace("$", "")
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
