"""OpenAI's Responses request (``POST /v1/responses``) as a cascade route accepts it.

Typed as strictly as the chat request (``chat_request``): a documented field of the wrong type is
a 400 naming it, keys the spec does not name are tolerated. ``input`` is a string or a list of
messages (``{"role", "content"}``, optionally ``"type": "message"``) whose content is a string or
``input_text`` parts (``output_text`` for an assistant's earlier turns); ``instructions`` becomes a
system turn. What a stateless cascade cannot serve is refused by name: tools, background runs,
stored conversations (``previous_response_id``, ``conversation``) and stored prompts. ``store`` is
accepted and ignored: nothing is stored, so nothing can be retrieved later.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Tag

from gateway.api.chat_request import (
    CoEExtension,
    MetadataKey,
    MetadataValue,
    RequestBody,
    _by_key,
    _by_kind,
    _Object,
    validate_request,
)
from gateway.api.structured import StructuredOutput, json_object_output, json_schema_output
from gateway.errors import BadRequest


class InputText(_Object):
    type: Literal["input_text"]
    text: str


class OutputText(_Object):
    type: Literal["output_text"]
    text: str


InputPart = Annotated[
    Annotated[InputText, Tag("<input_text>")] | Annotated[OutputText, Tag("<output_text>")],
    _by_key("type", "input_text", "output_text"),
]
InputContent = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[InputPart], Tag("<array>"), Field(min_length=1)],
    _by_kind("a string or an array of input_text parts"),
]


class InputMessage(_Object):
    """A Responses input message (``EasyInputMessage`` or ``type: "message"``)."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: InputContent

    def chat_message(self) -> dict[str, Any]:
        if isinstance(self.content, str):
            return {"role": self.role, "content": self.content}
        return {
            "role": self.role,
            "content": [{"type": "text", "text": part.text} for part in self.content],
        }


Input = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[InputMessage], Tag("<array>"), Field(min_length=1)],
    _by_kind("a string or an array of input messages"),
]


class TextFormatText(_Object):
    type: Literal["text"]


class TextFormatJsonObject(_Object):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Object):
    type: Literal["json_schema"]
    name: str
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    Annotated[TextFormatText, Tag("<text>")]
    | Annotated[TextFormatJsonObject, Tag("<json_object>")]
    | Annotated[TextFormatJsonSchema, Tag("<json_schema>")],
    _by_key("type", "text", "json_object", "json_schema"),
]


class TextConfig(_Object):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesStreamOptions(_Object):
    include_obfuscation: bool | None = None


class ResponsesRequest(RequestBody):
    """OpenAI's ``CreateResponse``: the fields a cascade reads or must refuse, typed as OpenAI
    types them, plus the ``coe`` extension. Every optional field may be ``null``."""

    model: str = Field(min_length=1)
    input: Input
    instructions: str | None = None
    # Sampling and length.
    max_output_tokens: int | None = Field(default=None, gt=0, le=65536)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # Delivery.
    stream: bool | None = None
    stream_options: ResponsesStreamOptions | None = None
    text: TextConfig | None = None
    include: list[str] | None = None
    truncation: str | None = None
    reasoning: dict[str, Any] | None = None
    # What a stateless cascade cannot serve (typed first, refused by ``check_supported``).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    # Bookkeeping.
    store: bool | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    coe: CoEExtension | None = None

    def check_supported(self) -> None:
        refused = {
            "tools": (bool(self.tools), "tool calls are"),
            "background": (self.background is True, "background responses are"),
            "previous_response_id": (
                self.previous_response_id is not None,
                "previous_response_id (responses are not stored) is",
            ),
            "conversation": (self.conversation is not None, "conversations are"),
            "prompt": (self.prompt is not None, "stored prompts are"),
        }
        for param, (given, what) in refused.items():
            if given:
                raise BadRequest(
                    f"{what} not supported on a cascade route; send the whole input instead"
                    if param in ("previous_response_id", "conversation")
                    else f"{what} not supported on a cascade route",
                    param=param, code="unsupported_parameter",
                )
        if self.tool_choice not in (None, "none", "auto"):
            raise BadRequest(
                "tool calls are not supported on a cascade route",
                param="tool_choice", code="unsupported_value",
            )

    def chat_messages(self) -> list[dict[str, Any]]:
        """``instructions`` and ``input`` as chat messages, the upstreams' dialect."""
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            messages.append({"role": "user", "content": self.input})
        else:
            messages.extend(item.chat_message() for item in self.input)
        return messages

    def structured_output(self) -> StructuredOutput | None:
        """What ``text.format`` asks (``gateway.api.structured``); None for plain text."""
        fmt = self.text.format if self.text is not None else None
        if isinstance(fmt, TextFormatJsonObject):
            return json_object_output("text.format")
        if isinstance(fmt, TextFormatJsonSchema):
            return json_schema_output(
                name=fmt.name, schema=fmt.schema_, description=fmt.description,
                strict=fmt.strict, param="text.format",
            )
        return None


def parse_responses_request(payload: Any) -> ResponsesRequest:
    return validate_request(ResponsesRequest, payload)
