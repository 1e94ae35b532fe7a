#!/usr/bin/env bash
# The real-vLLM checks on a machine with an NVIDIA GPU: the `vllm`-marked integration tests
# (tests/test_vllm_server.py) against vLLM's CUDA build, then one throughput row (a 3-member tier
# on one GPU: cascades/s and GPU-seconds per request as the gateway bills them, beside vLLM's own
# e2e metrics) appended to bench/results/vllm-gpu-<date>.txt.
#
# Works offline from a small copied tree. It needs, and says so when one is missing:
#   - an NVIDIA GPU visible to nvidia-smi;
#   - WHEELS=DIR: a wheel directory holding vllm (the CUDA build, e.g. `pip download vllm==0.33.0
#     -d DIR` on a machine with internet and the same Python), its dependencies, and the gateway's
#     own dependencies with its test extra (`pip download -d DIR -e '.[test]'`);
#   - MODEL=DIR: an HF-format model folder vLLM can load with a chat template, served as
#     "smollm2" (the converted SmolLM2 folder from a CPU machine: .pytest_cache/coe-vllm/
#     smollm2-135m-bf16, made by tests/vllm_model.py; ~270 MB);
#   - python3 (>= 3.11) with venv.
# Optional: VLLM_ARGS (extra server options, default "--gpu-memory-utilization 0.3"),
# REQUESTS / CONCURRENCY for the throughput row (default 400 / 32), GPU_NAME (a key of the default
# GPU-hour price table: V100, A6000, A100, H100; default H100).
#
#   WHEELS=/data/wheels MODEL=/data/smollm2-135m-bf16 bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "gpu_check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this script needs an NVIDIA GPU"
nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi sees no GPU"
[[ -n "${WHEELS:-}" && -d "${WHEELS}" ]] \
    || fail "set WHEELS=DIR to a wheel directory with vllm (CUDA build), its dependencies and the gateway's ('.[test]')"
compgen -G "${WHEELS}/vllm-*.whl" >/dev/null \
    || fail "no vllm-*.whl in WHEELS=${WHEELS} (pip download vllm -d ${WHEELS})"
[[ -n "${MODEL:-}" && -f "${MODEL}/config.json" ]] \
    || fail "set MODEL=DIR to an HF-format model folder (config.json, safetensors, tokenizer, chat template)"
python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
    || fail "python3 >= 3.11 is needed"

offline=(--no-index --find-links "${WHEELS}")
gpu_venv=.venv-vllm-gpu

if [[ ! -x .venv/bin/pytest ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet "${offline[@]}" -e '.[test]' \
        || fail "the gateway's dependencies are not all in WHEELS=${WHEELS}"
fi
if [[ ! -x "${gpu_venv}/bin/python" ]]; then
    python3 -m venv "${gpu_venv}"
    "${gpu_venv}/bin/pip" install --quiet "${offline[@]}" vllm \
        || fail "vllm or one of its dependencies is missing from WHEELS=${WHEELS}"
fi
"${gpu_venv}/bin/python" -c 'import torch, vllm; assert torch.cuda.is_available(); print("vllm", vllm.__version__, "on", torch.cuda.get_device_name(0))' \
    || fail "vllm is installed but torch sees no CUDA device"

export COE_VLLM_VENV="${gpu_venv}" COE_VLLM_MODEL_DIR="${MODEL}" COE_REQUIRE_VLLM=1
export COE_VLLM_ARGS="${VLLM_ARGS:---gpu-memory-utilization 0.3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.venv/bin/pytest -m vllm tests/test_vllm_server.py -p no:cacheprovider -rA

mkdir -p bench/results
out="bench/results/vllm-gpu-$(date -u +%Y-%m-%dT%H%M).txt"
{
    echo "# bench/gpu_check.sh $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "${gpu_venv}/bin/python" -c 'import vllm; print("vllm", vllm.__version__)'
    .venv/bin/python bench/vllm_throughput.py --requests "${REQUESTS:-400}" \
        --concurrency "${CONCURRENCY:-32}" --gpu "${GPU_NAME:-H100}"
} | tee "${out}"
echo "gpu_check: wrote ${out}"
