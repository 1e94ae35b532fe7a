"""One upstream endpoint as configured: the ``[[endpoints]]`` table of the gateway's config.

It lives with the providers because it is what a provider is built from; the gateway's config
embeds it as is.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EndpointKind = Literal["openai", "vllm", "llamacpp", "anthropic", "replay", "python"]
# The kinds that call an upstream over HTTP at ``base_url``.
HTTP_KINDS: tuple[EndpointKind, ...] = ("openai", "vllm", "llamacpp", "anthropic")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FewShotExample(_Model):
    user: str
    assistant: str


class EndpointConfig(_Model):
    name: str = Field(min_length=1)
    kind: EndpointKind = "openai"
    base_url: str = ""
    model: str = ""
    api_key_env: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=64, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    # Circuit breaker: open after this many consecutive failures (0: no breaker), for this long.
    breaker_failures: int = Field(default=5, ge=0)
    breaker_cooldown_s: float = Field(default=10.0, gt=0)
    usd_per_mtok_in: float = Field(default=0.0, ge=0)
    usd_per_mtok_out: float = Field(default=0.0, ge=0)
    gpu: str | None = None
    gpus: int = Field(default=1, gt=0)
    # The GPU server this endpoint runs on, for metering GPU time: endpoints of one pool share
    # one clock (``gpu_meter_key``). Default: the endpoint's base_url.
    gpu_pool: str | None = Field(default=None, min_length=1)
    # Sampling sent by the OpenAI-compatible kinds; each wins over the route's value when set,
    # so a tier can be N samples of one model (``extra_body`` still wins over both).
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    # vLLM ≥ 0.12 takes `structured_outputs`; older servers take `guided_choice`. "auto" asks the
    # server's GET /version once; a forced field the server's version ignores is corrected, with a
    # WARNING (see providers.vllm).
    vllm_choice_field: Literal["auto", "structured_outputs", "guided_choice"] = "auto"
    system_prompt: str | None = None
    few_shot: tuple[FewShotExample, ...] = ()
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # kind = "replay": the recording to answer from; kind = "python": "module:function".
    recording: str | None = None
    function: str | None = None

    @property
    def gpu_meter_key(self) -> str:
        """The key GPU time is metered under: calls in flight on one GPU server share its time,
        whichever endpoint name they came through. ``gpu_pool`` when set, else the server's
        ``base_url`` (without a trailing slash), else the endpoint's name."""
        if self.gpu_pool is not None:
            return f"pool:{self.gpu_pool}"
        if self.base_url:
            return f"url:{self.base_url.rstrip('/')}"
        return f"endpoint:{self.name}"

    @model_validator(mode="after")
    def _kind_needs(self) -> EndpointConfig:
        if self.kind in HTTP_KINDS:
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"kind {self.kind!r} needs base_url = 'http(s)://…'")
        if self.kind == "replay" and not self.recording:
            raise ValueError("kind 'replay' needs recording = 'RUN.jsonl'")
        if self.kind == "python" and (not self.function or ":" not in self.function):
            raise ValueError("kind 'python' needs function = 'module:function'")
        return self
