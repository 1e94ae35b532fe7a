"""OpenAI's chat-completion request as the gateway accepts it (the answers: ``protocol``).

The request models follow OpenAI's ``CreateChatCompletionRequest`` (openai/openai-openapi): every
documented field is typed strictly, as OpenAI's API types it — ``"temperature": "hot"`` or
``"max_tokens": "10"`` is a 400 naming the param, whether the gateway uses the field or not —
while keys the spec does not name are tolerated. Values of enumerations OpenAI keeps extending
(``service_tier``, ``reasoning_effort``, ``verbosity``, …) are checked as strings only, so a new
value does not turn into a 400 here before the gateway is updated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from gateway.api.structured import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    StructuredOutput,
    json_object_output,
    json_schema_output,
)
from gateway.config import PolicyName, Task
from gateway.errors import BadRequest
from gateway.plan import CoEOverrides
from policies.threshold import parse_threshold

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

# Per-request labels are compiled into matchers; ``structured`` bounds what one request can ask
# for (MAX_LABELS labels of at most MAX_LABEL_CHARS characters).

# Parameters that change what a cascade would have to vote on; refused rather than ignored.
_UNSUPPORTED = {
    "tools": "tool calls are",
    "functions": "function calls are",
    "audio": "audio output is",
}


# -- Unions, chosen the way OpenAI's spec chooses them: by JSON type, or by an object's key. --
# Branch tags are written "<…>" so that the error translator can drop them from a param's path.
_CHOICE = "choice_of_"


def _json_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "<string>"
    if isinstance(value, list):
        return "<array>"
    if isinstance(value, dict):
        return "<object>"
    return None


def _by_kind(expected: str) -> Discriminator:
    """A union of a string, an array and/or an object; anything else is ``invalid_type``."""
    return Discriminator(
        _json_kind, custom_error_type="invalid_type", custom_error_message=expected
    )


def _by_key(key: str, *values: str) -> Discriminator:
    """A union of objects told apart by ``key`` (OpenAI's ``role`` or ``type``)."""

    def tag(value: Any) -> str | None:
        chosen = value.get(key) if isinstance(value, dict) else None
        return f"<{chosen}>" if isinstance(chosen, str) and chosen in values else None

    supported = ", ".join(f"'{v}'" for v in values)
    return Discriminator(tag, custom_error_type=_CHOICE + key, custom_error_message=supported)


class _Object(BaseModel):
    """An object of OpenAI's request: documented keys typed strictly (``"1"`` is not 1, ``1`` is
    not ``true``), keys the spec does not name tolerated."""

    model_config = ConfigDict(strict=True, extra="allow")


# -- Content parts --


class TextPart(_Object):
    type: Literal["text"]
    text: str


class ImageURL(_Object):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Object):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Object):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Object):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Object):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(_Object):
    type: Literal["file"]
    file: FileRef


class RefusalPart(_Object):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[
    Annotated[TextPart, Tag("<text>")]
    | Annotated[ImagePart, Tag("<image_url>")]
    | Annotated[AudioPart, Tag("<input_audio>")]
    | Annotated[FilePart, Tag("<file>")],
    _by_key("type", "text", "image_url", "input_audio", "file"),
]
AssistantPart = Annotated[
    Annotated[TextPart, Tag("<text>")] | Annotated[RefusalPart, Tag("<refusal>")],
    _by_key("type", "text", "refusal"),
]
TextContent = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[TextPart], Tag("<array>"), Field(min_length=1)],
    _by_kind("a string or an array of text parts"),
]
UserContent = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[UserPart], Tag("<array>"), Field(min_length=1)],
    _by_kind("a string or an array of content parts"),
]
AssistantContent = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[AssistantPart], Tag("<array>"), Field(min_length=1)],
    _by_kind("a string or an array of content parts"),
]


# -- Messages, one model per role --


class FunctionCall(_Object):
    name: str
    arguments: str


class FunctionToolCall(_Object):
    id: str
    type: Literal["function"]
    function: FunctionCall


class CustomCall(_Object):
    name: str
    input: str


class CustomToolCall(_Object):
    id: str
    type: Literal["custom"]
    custom: CustomCall


ToolCall = Annotated[
    Annotated[FunctionToolCall, Tag("<function>")] | Annotated[CustomToolCall, Tag("<custom>")],
    _by_key("type", "function", "custom"),
]


class AudioRef(_Object):
    id: str


class SystemMessage(_Object):
    role: Literal["system"]
    content: TextContent
    name: str | None = None


class DeveloperMessage(_Object):
    role: Literal["developer"]
    content: TextContent
    name: str | None = None


class UserMessage(_Object):
    role: Literal["user"]
    content: UserContent
    name: str | None = None


class AssistantMessage(_Object):
    role: Literal["assistant"]
    content: AssistantContent | None = None
    refusal: str | None = None
    name: str | None = None
    audio: AudioRef | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class ToolMessage(_Object):
    role: Literal["tool"]
    content: TextContent
    tool_call_id: str


class FunctionMessage(_Object):
    role: Literal["function"]
    content: str | None
    name: str


ChatMessage = Annotated[
    Annotated[SystemMessage, Tag("<system>")]
    | Annotated[DeveloperMessage, Tag("<developer>")]
    | Annotated[UserMessage, Tag("<user>")]
    | Annotated[AssistantMessage, Tag("<assistant>")]
    | Annotated[ToolMessage, Tag("<tool>")]
    | Annotated[FunctionMessage, Tag("<function>")],
    _by_key("role", "system", "developer", "user", "assistant", "tool", "function"),
]


# -- The other objects of the request --


class StreamOptions(_Object):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ResponseFormatText(_Object):
    type: Literal["text"]


class ResponseFormatJsonObject(_Object):
    type: Literal["json_object"]


class JsonSchemaFormat(_Object):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJsonSchema(_Object):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    Annotated[ResponseFormatText, Tag("<text>")]
    | Annotated[ResponseFormatJsonObject, Tag("<json_object>")]
    | Annotated[ResponseFormatJsonSchema, Tag("<json_schema>")],
    _by_key("type", "text", "json_object", "json_schema"),
]


class FunctionDefinition(_Object):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Object):
    type: Literal["function"]
    function: FunctionDefinition


class CustomDefinition(_Object):
    name: str
    description: str | None = None
    format: dict[str, Any] | None = None


class CustomTool(_Object):
    type: Literal["custom"]
    custom: CustomDefinition


Tool = Annotated[
    Annotated[FunctionTool, Tag("<function>")] | Annotated[CustomTool, Tag("<custom>")],
    _by_key("type", "function", "custom"),
]


class Named(_Object):
    name: str


class NamedFunctionChoice(_Object):
    type: Literal["function"]
    function: Named


class NamedCustomChoice(_Object):
    type: Literal["custom"]
    custom: Named


class AllowedTools(_Object):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Object):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("<string>")]
    | Annotated[
        Annotated[NamedFunctionChoice, Tag("<function>")]
        | Annotated[NamedCustomChoice, Tag("<custom>")]
        | Annotated[AllowedToolsChoice, Tag("<allowed_tools>")],
        Tag("<object>"),
        _by_key("type", "function", "custom", "allowed_tools"),
    ],
    _by_kind("a string or an object"),
]
FunctionCallChoice = Annotated[
    Annotated[Literal["none", "auto"], Tag("<string>")] | Annotated[Named, Tag("<object>")],
    _by_kind("a string or an object"),
]
Stop = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[str], Tag("<array>"), Field(min_length=1, max_length=4)],
    _by_kind("a string or an array of strings"),
]


class Prediction(_Object):
    type: Literal["content"]
    content: TextContent


class CustomVoice(_Object):
    id: str


class AudioOutput(_Object):
    voice: Annotated[
        Annotated[str, Tag("<string>")] | Annotated[CustomVoice, Tag("<object>")],
        _by_kind("a string or an object"),
    ]
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class ApproximateLocation(_Object):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    timezone: str | None = None


class UserLocation(_Object):
    type: Literal["approximate"]
    approximate: ApproximateLocation


class WebSearchOptions(_Object):
    user_location: UserLocation | None = None
    search_context_size: str | None = None


class CoEExtension(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    labels: list[str] | None = Field(default=None, min_length=1, max_length=MAX_LABELS)
    task: Task | None = None
    threshold: float | None = None
    max_tier: int | None = Field(default=None, ge=0)
    policy: PolicyName | None = None

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("threshold must be a number or a fraction such as 2/3")
        return parse_threshold(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and any(
            not label.strip() or len(label) > MAX_LABEL_CHARS for label in labels
        ):
            raise ValueError(f"labels must be non-empty strings of at most {MAX_LABEL_CHARS} chars")
        return labels

    def overrides(self) -> CoEOverrides:
        return CoEOverrides(
            labels=tuple(self.labels) if self.labels is not None else None,
            task=self.task,
            threshold=self.threshold,
            max_tier=self.max_tier,
            policy=self.policy,
        )


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]
TokenBias = Annotated[int, Field(ge=-100, le=100)]


class RequestBody(_Object):
    """A route's whole request body."""

    def check_supported(self) -> None:
        """A 400 naming the param a cascade cannot serve; typing is checked before."""


class ChatCompletionRequest(RequestBody):
    """OpenAI's ``CreateChatCompletionRequest``, field for field, plus the ``coe`` extension.
    Every optional field may be ``null``, meaning "not given"."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    # Sampling and length.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, gt=0, le=65536)
    max_completion_tokens: int | None = Field(default=None, gt=0, le=65536)
    stop: Stop | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, TokenBias] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    # Delivery.
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    prediction: Prediction | None = None
    # Tools (refused on a cascade route, but typed first, as OpenAI types them).
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = Field(default=None, min_length=1, max_length=128)
    function_call: FunctionCallChoice | None = None
    web_search_options: WebSearchOptions | None = None
    # Bookkeeping; open enumerations are strings (see the module's docstring).
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    moderation: dict[str, Any] | None = None
    coe: CoEExtension | None = None

    def check_supported(self) -> None:
        if self.n is not None and self.n != 1:
            raise BadRequest(
                "n must be 1: a cascade returns one decided answer",
                param="n", code="unsupported_value",
            )
        for field, what in _UNSUPPORTED.items():
            if getattr(self, field):
                raise BadRequest(
                    f"{what} not supported on a cascade route",
                    param=field, code="unsupported_parameter",
                )
        if self.modalities and "audio" in self.modalities:
            raise BadRequest(
                "audio output is not supported on a cascade route",
                param="modalities", code="unsupported_value",
            )
        for field in ("tool_choice", "function_call"):
            if getattr(self, field) not in (None, "none"):
                raise BadRequest(
                    "tool calls are not supported on a cascade route",
                    param=field, code="unsupported_value",
                )

    @property
    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def structured_output(self) -> StructuredOutput | None:
        """What ``response_format`` asks (``gateway.api.structured``); None for plain text."""
        fmt = self.response_format
        if isinstance(fmt, ResponseFormatJsonObject):
            return json_object_output("response_format")
        if isinstance(fmt, ResponseFormatJsonSchema):
            spec = fmt.json_schema
            return json_schema_output(
                name=spec.name, schema=spec.schema_, description=spec.description,
                strict=spec.strict, param="response_format.json_schema",
            )
        return None


def parse_chat_request(payload: Any) -> ChatCompletionRequest:
    return validate_request(ChatCompletionRequest, payload)


_R = TypeVar("_R", bound="RequestBody")


def validate_request(model: type[_R], payload: Any) -> _R:
    """``payload`` as ``model``, or the 400 OpenAI would answer for its first error."""
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_type")
    try:
        request = model.model_validate(payload)
    except ValidationError as exc:
        raise _bad_request(exc.errors()[0]) from None
    request.check_supported()
    return request


# -- pydantic's errors in OpenAI's words --

_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "below_min", ">="),
    "greater_than": ("gt", "below_min", ">"),
    "less_than_equal": ("le", "above_max", "<="),
    "less_than": ("lt", "above_max", "<"),
}
_LENGTHS = {
    "too_short": ("min_length", "below_min_length", "minimum"),
    "string_too_short": ("min_length", "below_min_length", "minimum"),
    "too_long": ("max_length", "above_max_length", "maximum"),
    "string_too_long": ("max_length", "above_max_length", "maximum"),
}


def _bad_request(error: ErrorDetails) -> BadRequest:
    """One pydantic error as OpenAI words it: the param's dotted path (``messages.0.role``), a
    sentence naming it, and OpenAI's code (``invalid_type``, ``invalid_value``, …)."""
    path = [
        str(part) for part in error["loc"]
        if not (isinstance(part, str) and part.startswith("<") and part.endswith(">"))
    ]
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind.startswith(_CHOICE):  # an object whose role/type names none of its kinds
        key = kind.removeprefix(_CHOICE)
        if not isinstance(value, dict):
            return _invalid_type(path, "an object", value)
        if value.get(key) is None:
            return _missing([*path, key])
        if not isinstance(value[key], str):
            return _invalid_type([*path, key], "a string", value[key])
        param = ".".join([*path, key])
        return BadRequest(
            f"Invalid value for '{param}': {_show(value[key])}. Supported values are: "
            f"{error['msg']}.", param=param, code="invalid_value",
        )
    param = ".".join(path)
    if kind == "invalid_type":
        return _invalid_type(path, error["msg"], value)
    if kind in _EXPECTED:
        return _invalid_type(path, _EXPECTED[kind], value)
    if kind == "missing":
        return _missing(path)
    if kind == "extra_forbidden":
        return BadRequest(
            f"Unrecognized request argument supplied: {param}",
            param=param, code="unknown_parameter",
        )
    if kind == "literal_error":
        return BadRequest(
            f"Invalid value for '{param}': {_show(value)}. Supported values are: "
            f"{ctx.get('expected')}.", param=param, code="invalid_value",
        )
    if kind in _BOUNDS:
        key, side, op = _BOUNDS[kind]
        bound = ctx.get(key)
        noun = "decimal" if isinstance(bound, float) else "integer"
        shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        return BadRequest(
            f"Invalid '{param}': {noun} {side.replace('_', ' ')}imum value. Expected a value "
            f"{op} {shown}, but got {_show(value)} instead.",
            param=param, code=f"{noun}_{side}_value",
        )
    if kind in _LENGTHS:
        key, code, side = _LENGTHS[kind]
        noun = _json_type(value)
        code = "empty_array" if noun == "array" and not value else f"{noun}_{code}"
        return BadRequest(
            f"Invalid '{param}': {noun} of length {len(value)}. Expected a {side} length of "
            f"{ctx.get(key)}.", param=param, code=code,
        )
    message = error["msg"].removeprefix("Value error, ")
    return BadRequest(f"Invalid '{param}': {message}", param=param or None, code="invalid_value")


def _invalid_type(path: list[str], expected: str, value: Any) -> BadRequest:
    param = ".".join(path)
    return BadRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_a(_json_type(value))} "
        "instead.",
        param=param or None, code="invalid_type",
    )


def _missing(path: list[str]) -> BadRequest:
    param = ".".join(path)
    return BadRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _json_type(value: Any) -> str:
    for python_type, name in (
        (bool, "boolean"), (int, "integer"), (float, "decimal"), (str, "string"),
        (list, "array"), (dict, "object"),
    ):
        if isinstance(value, python_type):
            return name
    return "null"


def _a(noun: str) -> str:
    return noun if noun == "null" else ("an " if noun[0] in "aeiou" else "a ") + noun


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


OVERRIDE_HEADERS = {
    "x-coe-threshold": "θ for this request, as a decimal or a fraction such as 2/3",
    "x-coe-policy": "vote or confidence",
    "x-coe-max-tier": "the highest tier index (0-based) the request may reach",
    "x-coe-tags": "comma-separated cost-attribution tags (at most 16, 64 characters each)",
}


def chat_request_openapi() -> dict[str, Any]:
    """The chat route's body and override headers for the OpenAPI document: the route reads its
    raw body itself (for speed and OpenAI's error shape), so FastAPI cannot infer them."""
    return request_openapi(ChatCompletionRequest)


def request_openapi(model: type[RequestBody]) -> dict[str, Any]:
    """A cascade route's body (``model``, inlined) and the override headers, for the document."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_refs(schema, definitions)}},
        },
        "parameters": [
            {"name": name, "in": "header", "required": False, "description": meaning,
             "schema": {"type": "string"}}
            for name, meaning in OVERRIDE_HEADERS.items()
        ],
    }


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    # The request models are not recursive, so every "$ref" can be replaced by its definition.
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline_refs(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, definitions) for item in node]
    return node
