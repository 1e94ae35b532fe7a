"""``python -m gateway.evaluation.llama_server ARGS``: llama-cpp-python's server
(``python -m llama_cpp.server ARGS``) with llama.cpp's extra weight buffer types off.

On a CPU with AMX (Intel Sapphire Rapids and later), llama.cpp repacks the model's weights into an
AMX buffer and, in virtual machines, crashes (SIGSEGV) on the first completion
(ggml-org/llama.cpp#20824, seen here on a 2-core Xeon VM: the server answered ``/v1/models`` and
died on the first ``/v1/chat/completions``). llama-cpp-python's server has no option for
``llama_model_params.use_extra_bufts``, so this sets it in the defaults every model is loaded
with, then runs the server as its own ``__main__``. Weights stay in plain CPU buffers: the same
answers, without the repacked kernels (Gemma 3 270M answers a short prompt in well under a
second either way).
"""

from __future__ import annotations

import runpy

import llama_cpp.llama_cpp as bindings

_default_model_params = bindings.llama_model_default_params


def _model_params_without_extra_buffers() -> bindings.llama_model_params:
    params: bindings.llama_model_params = _default_model_params()
    params.use_extra_bufts = False
    return params


def main() -> None:
    bindings.llama_model_default_params = _model_params_without_extra_buffers
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
