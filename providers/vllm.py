"""vLLM's OpenAI-compatible server: the answer constrained to the route's answer set.

vLLM's docs (features/structured_outputs): a chat request takes ``"structured_outputs": {"choice":
[...]}`` as an extra body field; ``guided_choice`` was its name until it was removed in v0.12.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from providers.openai_compat import OpenAIProvider

if TYPE_CHECKING:
    from providers.base import CallRequest


class VLLMProvider(OpenAIProvider):
    def _body(self, request: CallRequest) -> dict[str, Any]:
        body = super()._body(request)
        # Always: the confidence policy reads them, and vLLM returns them at little cost.
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
        if request.answer_set:
            choices = list(request.answer_set)
            if self._endpoint.vllm_choice_field == "guided_choice":
                body["guided_choice"] = choices
            else:
                body["structured_outputs"] = {"choice": choices}
        return body
