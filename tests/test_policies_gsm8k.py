"""The ``number`` task on real outputs: 12 LLMs' raw answers to GSM8K, read as well as ZeroEval.

The recorded set (``shared/data/gsm8k-zeroeval``, see ``shared/data/README.md``) holds what twelve
real models wrote when asked to answer GSM8K's 1,319 test questions as JSON ``{"reasoning",
"answer"}``: fenced JSON, JSON with commentary after it, JSON with raw line breaks or unescaped
quotes in its strings, plain prose. Per model, the accuracy read by ``policies`` must be within
0.3 points of the reference: ZeroEval's published figure where the README gives one, else the
figure of ZeroEval's own parser, re-implemented below. The reading rules each have a focused test
first; those need no data.
"""

from __future__ import annotations

import ast
import json
import operator
import re
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from policies.answers import AnswerSpec, normalise

NUMBER = AnswerSpec("number")
SENTIMENT = AnswerSpec("classify", ("negative", "positive"))

# -- the reading rules, one behaviour per test ---------------------------------------------------


def test_a_json_answer_followed_by_commentary_reads_its_answer_field() -> None:
    text = (
        '{"reasoning": "40 + 30 = 70", "answer": "70"}\n\n'
        "The key steps are:\n1. Set up the equation.\n2. Solve for x."
    )
    assert normalise(text, NUMBER) == "70"


def test_fenced_json_after_a_preamble_reads_its_answer_field() -> None:
    text = 'Here is the solution:\n\n```json\n{"reasoning": "3 x 6 = 18", "answer": "18"}\n```'
    assert normalise(text, NUMBER) == "18"


def test_raw_line_breaks_inside_json_strings_are_allowed() -> None:
    text = '{\n  "reasoning": "Step 1: 5 + 3 = 8\nStep 2: 8 x 2 = 16",\n  "answer": "16"\n}'
    assert normalise(text, NUMBER) == "16"


def test_braces_inside_json_strings_do_not_end_the_object() -> None:
    text = '{"reasoning": "So \\\\boxed{9} is the step.", "answer": 12}\nStep 3 of 4.'
    assert normalise(text, NUMBER) == "12"


def test_json_broken_by_an_unescaped_quote_still_gives_its_answer_pair() -> None:
    text = '{\n "reasoning": "She is 64" tall, so 64 x 3 = 192.",\n "answer": "192"\n}\nDone in 2.'
    assert normalise(text, NUMBER) == "192"


def test_broken_json_whose_answer_pairs_disagree_is_unparsable() -> None:
    text = '{"reasoning": "5" wide", "answer": "5"} or rather {"reasoning": "6" wide", "answer": 6}'
    assert normalise(text, NUMBER) is None


def test_json_cut_off_before_its_answer_is_unparsable() -> None:
    text = '```json\n{\n  "reasoning": "First, 3 x 4 = 12. Then 12 - 5 = 7. Then we'
    assert normalise(text, NUMBER) is None


def test_two_json_answers_that_differ_are_unparsable() -> None:
    text = '{"answer": "18"}\n\nOn second thought:\n\n**Correction:**\n{"answer": "16"}'
    assert normalise(text, NUMBER) is None


def test_two_json_answers_that_agree_read_as_that_answer() -> None:
    assert normalise('{"answer": "16"}\nTo confirm:\n{"answer": 16.0}', NUMBER) == "16"


@pytest.mark.parametrize("field", ['{"glasses": 86, "plates": 42}', "[4, 6]", "true"])
def test_an_answer_field_holding_a_structure_is_unparsable(field: str) -> None:
    text = '{"reasoning": "He has 86 glasses and 42 plates; 128 in all.", "answer": ' + field + "}"
    assert normalise(text, NUMBER) is None


@pytest.mark.parametrize(
    ("field", "number"),
    [("53 feet", "53"), ("$9,500", "9500"), ("25%", "25"), ("6th", "6"), ('67\\"', "67")],
)
def test_an_answer_field_with_a_unit_reads_as_its_number(field: str, number: str) -> None:
    text = '{"reasoning": "Steps 1 to 3.", "answer": "' + field + '"}'
    assert normalise(text, NUMBER) == number


@pytest.mark.parametrize(
    "field", ["86 glasses and 42 plates", "4 blue and 6 red", "3 1/3", "7 hours and 30 minutes"]
)
def test_an_answer_field_naming_several_numbers_is_unparsable(field: str) -> None:
    assert normalise('{"answer": "' + field + '"}', NUMBER) is None


def test_an_answer_field_holding_a_calculation_reads_its_result() -> None:
    field = "1,360 - (64 + 30 + 48) = 1,360 - 142 = 1,218"
    assert normalise('{"answer": "' + field + '"}', NUMBER) == "1218"


@pytest.mark.parametrize("field", ["x + 3", "32 + 0.8x", "$56,000 + Lylah's new salary"])
def test_an_answer_field_holding_an_expression_is_unparsable(field: str) -> None:
    assert normalise('{"answer": "' + field + '"}', NUMBER) is None


def test_an_answer_field_without_a_number_is_unparsable() -> None:
    text = '{"reasoning": "We know 3 of the 5 values.", "answer": "Cannot be determined"}'
    assert normalise(text, NUMBER) is None


def test_a_clock_time_on_the_hour_reads_as_its_hour() -> None:
    assert normalise('{"answer": "2:00 pm"}', NUMBER) == "2"


@pytest.mark.parametrize("text", ['{"answer": "2:10 pm"}', "So she starts at 2:10 pm."])
def test_a_clock_time_with_minutes_is_unparsable_not_its_minutes(text: str) -> None:
    assert normalise(text, NUMBER) is None


def test_a_sign_before_a_currency_symbol_is_kept() -> None:
    assert normalise('{"answer": "-$21.00"}', NUMBER) == "-21"


def test_free_text_still_reads_its_last_number() -> None:
    assert normalise("3 + 4 = 7, and 7 x 2 = 14 apples.", NUMBER) == "14"


def test_classification_reads_a_json_label_followed_by_commentary() -> None:
    text = '{"label": "positive"}\n\nNot negative: the reviewer praises the cast.'
    assert normalise(text, SENTIMENT) == "positive"


@pytest.mark.parametrize(
    "text",
    [
        "{" * 200_000,
        '{"a":[' * 50_000,
        '{"reasoning": "' * 30_000,
        '{"a' * 60_000,
        '"answer": 1, ' * 20_000 + '"answer": 2',
    ],
)
def test_hostile_json_reads_in_about_linear_time(text: str) -> None:
    started = time.perf_counter()
    assert normalise(text, NUMBER) is None
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(("gold", "canonical"), [("18", "18"), ("-3", "-3"), ("70000", "70000")])
def test_gold_labels_read_as_their_canonical_number(gold: str, canonical: str) -> None:
    # A converter normalises gold with the same function, so "18" meets "18.0", "$18", "18 eggs".
    assert normalise(gold, NUMBER) == canonical
    for spelled in (f"{gold}.0", f"{int(gold):,}", f'{{"answer": "{gold} eggs"}}'):
        assert normalise(spelled, NUMBER) == canonical


# -- the recorded set --------------------------------------------------------------------------

DATA = Path(__file__).parents[2] / "shared" / "data" / "gsm8k-zeroeval"
needs_data = pytest.mark.skipif(
    not (DATA / "answers.jsonl").is_file(),
    reason=f"the recorded GSM8K answers are not at {DATA} (CI has them; see shared/data/README.md)",
)

# ZeroEval's published accuracies, as given in shared/data/README.md.
PUBLISHED = {
    "gpt-4o-2024-05-13": 95.38,
    "gpt-4o-2024-08-06": 96.21,
    "gemini-1.5-flash": 91.36,
    "Meta-Llama-3.1-8B-Instruct": 84.00,
    "Meta-Llama-3-8B-Instruct": 78.47,
    "gemma-2-9b-it": 87.41,
    "gpt-4o-mini-2024-07-18": 94.24,
    "claude-3-haiku-20240307": 88.78,
}
# The other four, as ZeroEval's result_dirs/gsm.summary.md @ 8c1485ed lists them; the README
# does not give them, so the policies test uses the re-implemented parser's figures for these,
# and this table only checks that the re-implementation is faithful.
SUMMARY_ONLY = {
    "Meta-Llama-3.1-70B-Instruct": 94.16,
    "Qwen2-72B-Instruct": 92.65,
    "gemini-1.5-pro": 93.40,
    "claude-3-5-sonnet-20240620": 95.60,
}
MODELS = [*PUBLISHED, *SUMMARY_ONLY]


@cache
def _rows() -> list[dict[str, Any]]:
    with (DATA / "answers.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _accuracy(correct: Callable[[str, str], bool], model: str) -> float:
    rows = _rows()
    return 100 * sum(correct(row["outputs"][model], row["gold"]) for row in rows) / len(rows)


def _policies_correct(output: str, gold: str) -> bool:
    read = normalise(output, NUMBER)
    return read is not None and read == normalise(gold, NUMBER)


# -- ZeroEval's GSM answer extraction, re-implemented -------------------------------------------
# Read from github.com/WildEval/ZeroEval @ 8c1485ed: src/evaluation/math_eval.py (eval_model,
# sanitize_math_answers) and src/evaluation/eval_utils.py (extract_first_complete_json,
# extract_values_from_json, model_specific_extraction). Quirks are kept on purpose: only the first
# complete top-level {...} is tried, strictly, after deleting line breaks; then regexes for the
# "answer" value; then \boxed{} for Llama-3.1 models; then the FIRST number of the answer value
# is compared as a float with the gold's first number.

_BRACE = re.compile(r"[{}]")
_FIRST_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _ze_first_complete_json(s: str) -> Any:
    # extract_first_complete_json: a brace stack, blind to strings; the first object to close
    # decides, and a parse error means None. (Only braces are visited, for speed.)
    depth, start = 0, -1
    for brace in _BRACE.finditer(s):
        if brace.group() == "{":
            if depth == 0:
                start = brace.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                try:
                    return json.loads(s[start : brace.end()].replace("\n", ""))
                except json.JSONDecodeError:
                    return None
    return None


def _ze_values_from_json(s: str) -> dict[str, str]:
    # extract_values_from_json(keys=["reasoning", "answer"], allow_no_quotes=True)
    values: dict[str, str] = {}
    for key in ("reasoning", "answer"):
        found = re.search(f'"{key}"\\s*:\\s*"([^"]*?)"', s) or re.search(
            f'"{key}"\\s*:\\s*"(.*?)"', s, re.DOTALL
        )
        if not found:
            found = re.search(f'"{key}"\\s*:\\s*([^,\\s]*)', s) or re.search(
                f"{key}\\s*:\\s*([^,\\s]*)", s
            )
        if found:
            values[key] = found.group(1)
    return values


def _ze_model_specific(model: str, s: str) -> str | None:
    # model_specific_extraction: "$\boxed{36}$" near the end, for Llama-3.1 models only.
    if "Llama-3.1" in model and "boxed" in s[-30:]:
        found = re.search(r"\\boxed{([\w\d]+)}", s)
        if found:
            return found.group(1)
    return None


_ARITHMETIC: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _arithmetic(node: ast.AST) -> Any:
    # What ZeroEval's eval() computes for plain arithmetic, without running model output as code
    # (powers, names and calls fail here, where eval would raise or run them).
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_arithmetic(node.operand))
    raise ValueError("not plain arithmetic")


def _ze_sanitize(answer: str) -> str:
    # sanitize_math_answers: drop "$" and ",", and evaluate anything with a "/" when it can be.
    answer = answer.replace("$", "").strip().replace(",", "")
    if "/" in answer:
        try:
            answer = str(float(_arithmetic(ast.parse(answer, mode="eval").body)))
        except (SyntaxError, ValueError, ZeroDivisionError, TypeError):
            pass
    return answer


def _zeroeval_correct(model: str, output: str, gold: str) -> bool:
    # eval_model's loop body for one item.
    parsed = _ze_first_complete_json(output)
    if not isinstance(parsed, dict) or "answer" not in parsed:
        parsed = _ze_values_from_json(output)
    if "answer" not in parsed:
        boxed = _ze_model_specific(model, output)
        if not boxed:
            return False  # "No answer extracted"
        parsed["answer"] = boxed
    answer = _FIRST_NUMBER.search(_ze_sanitize(str(parsed["answer"])))
    truth = _FIRST_NUMBER.search(_ze_sanitize(gold.replace("#", "").strip()))
    return bool(answer and truth and float(answer.group()) == float(truth.group()))


@cache
def _zeroeval_accuracy(model: str) -> float:
    return _accuracy(lambda output, gold: _zeroeval_correct(model, output, gold), model)


@needs_data
def test_the_set_holds_twelve_models_answering_1319_questions() -> None:
    rows = _rows()
    assert len(rows) == 1319
    assert all(sorted(row["outputs"]) == sorted(MODELS) for row in rows)
    assert all(re.fullmatch(r"-?\d+", row["gold"]) for row in rows)


@needs_data
@pytest.mark.parametrize("model", MODELS)
def test_the_zeroeval_reimplementation_reproduces_its_published_figure(model: str) -> None:
    published = {**PUBLISHED, **SUMMARY_ONLY}[model]
    assert _zeroeval_accuracy(model) == pytest.approx(published, abs=0.005)


@needs_data
@pytest.mark.parametrize("model", MODELS)
def test_policies_reads_each_model_within_0_3_points_of_zeroeval(model: str) -> None:
    reference = PUBLISHED[model] if model in PUBLISHED else _zeroeval_accuracy(model)
    read = _accuracy(_policies_correct, model)
    assert abs(read - reference) <= 0.3, f"{model}: policies {read:.2f} vs {reference:.2f}"
