"""Structured outputs on a cascade route: what a ``json_object`` or ``json_schema`` format asks.

A cascade decides one label, so the one schema it serves is an object with exactly one property,
the answer field: a string ``enum`` (the request's label set, task ``classify``) or a plain
``string`` (the route's own answer, e.g. a number or a label). A schema that names no property
(``{}``, ``{"type": "object"}``, or none) is served as ``json_object`` is. Voting reads each
upstream's answer as ever, the answer field first (``AnswerSpec.json_field``); the decided label
goes back to the client as ``{"<field>": "<label>"}``, which validates against its schema.
``json_object`` gets ``{"label": "<label>"}``. Any other schema is a 400: the cascade could not
vote on it.

The client's ``json_schema`` format is also kept, in chat-completions shape, for upstreams that
take OpenAI's ``response_format`` (``kind = "openai"``); vLLM and llama.cpp are constrained to the
label set itself (``CallRequest.answer_set``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import BadRequest

# Bounds shared with the ``coe.labels`` extension (a derived set is compiled into matchers too).
MAX_LABELS = 256
MAX_LABEL_CHARS = 200
JSON_OBJECT_FIELD = "label"


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """How the decided answer is delivered, and what the request's format adds to its plan."""

    # The JSON field the answer is delivered under.
    field: str
    # The answer field's enum: the request's label set; None when the schema names none.
    labels: tuple[str, ...] | None = None
    # OpenAI's chat ``response_format`` to forward to hosted upstreams; None for json_object.
    upstream: dict[str, Any] | None = None
    # The request's param the format came in (for 400s): ``response_format`` or ``text.format``.
    param: str = "response_format"

    def render(self, answer: str | None) -> str | None:
        """The client's JSON document for the decided answer (None stays None: no answer)."""
        if answer is None:
            return None
        return orjson.dumps({self.field: answer}).decode()


def json_object_output(param: str) -> StructuredOutput:
    return StructuredOutput(field=JSON_OBJECT_FIELD, param=param)


def json_schema_output(
    *,
    name: str,
    schema: dict[str, Any] | None,
    description: str | None,
    strict: bool | None,
    param: str,
) -> StructuredOutput:
    """The one-answer-field schema a cascade can serve, or a 400 naming ``param``."""
    schema_param = f"{param}.schema"
    json_schema: dict[str, Any] = {"name": name}
    if schema is not None:
        json_schema["schema"] = schema
    if _open_object(schema or {}):
        # No answer field named (``{}``, ``{"type": "object"}``): the label goes under "label".
        field, labels = JSON_OBJECT_FIELD, None
    else:
        field, prop = _answer_field(schema or {}, schema_param)
        labels = _enum_labels(prop, f"{schema_param}.properties.{field}")
    if description is not None:
        json_schema["description"] = description
    if strict is not None:
        json_schema["strict"] = strict
    return StructuredOutput(
        field=field,
        labels=labels,
        upstream={"type": "json_schema", "json_schema": json_schema},
        param=param,
    )


def _open_object(schema: dict[str, Any]) -> bool:
    """A schema that names no properties and lets ``{"label": …}`` through."""
    return (
        "properties" not in schema
        and schema.get("type", "object") == "object"
        and not schema.get("required")
        and schema.get("additionalProperties", True) is not False
        and set(schema) <= {"type", "title", "description", "additionalProperties", "$schema"}
    )


def _answer_field(schema: dict[str, Any], param: str) -> tuple[str, dict[str, Any]]:
    properties = schema.get("properties")
    kind = schema.get("type", "object")
    if kind != "object" or not isinstance(properties, dict) or len(properties) != 1:
        raise BadRequest(
            "a cascade decides one answer: the schema must be an object with exactly one "
            "property, a string enum of the labels (or a string)",
            param=param, code="unsupported_value",
        )
    ((field, prop),) = properties.items()
    if not isinstance(prop, dict):
        raise BadRequest(
            f"the schema's property {field!r} must be an object", param=param,
            code="invalid_value",
        )
    return field, prop


def _enum_labels(prop: dict[str, Any], param: str) -> tuple[str, ...] | None:
    enum = prop.get("enum")
    if enum is None:
        if prop.get("type") == "string":
            return None
        raise BadRequest(
            "the answer property must be a string enum of the labels, or a string",
            param=param, code="unsupported_value",
        )
    if (
        not isinstance(enum, list)
        or not enum
        or len(enum) > MAX_LABELS
        or not all(isinstance(v, str) and v.strip() and len(v) <= MAX_LABEL_CHARS for v in enum)
        or len(set(enum)) != len(enum)
    ):
        raise BadRequest(
            f"the answer property's enum must be 1 to {MAX_LABELS} distinct non-empty strings "
            f"of at most {MAX_LABEL_CHARS} characters",
            param=f"{param}.enum", code="invalid_value",
        )
    if prop.get("type", "string") != "string":
        raise BadRequest(
            "the answer property's enum must be of type string",
            param=f"{param}.type", code="unsupported_value",
        )
    return tuple(enum)
