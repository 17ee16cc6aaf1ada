"""Export the calibrated model as ModelOpt's unified Hugging Face checkpoint, the bundle's `checkpoint/`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from prefect import task

from enginewright.atomic import written_whole
from enginewright.cache_policies import step_policy
from enginewright.models import load_tokenizer
from enginewright.work_dir import WorkDir
from tasks.quantize import QuantizedState, restore_quantized


def export_checkpoint(checkpoint: Path, state: QuantizedState, dtype: str, out_dir: Path) -> Path:
    """Write `out_dir` (config.json, safetensors, hf_quant_config.json, tokenizer) all at once or not at all."""
    from modelopt.torch.export import export_hf_checkpoint

    model = restore_quantized(checkpoint, state, dtype)
    with written_whole(out_dir, folder=True) as tmp:
        with torch.inference_mode():
            export_hf_checkpoint(model, dtype=getattr(torch, dtype), export_dir=tmp)
        load_tokenizer(checkpoint).save_pretrained(tmp)
        if not (tmp / "hf_quant_config.json").is_file():
            raise RuntimeError(f"ModelOpt export wrote no hf_quant_config.json in {tmp}")
    return out_dir


def exported_quant_algo(checkpoint_dir: Path) -> dict:
    """The `quantization` section TensorRT-LLM reads (quant_algo, kv_cache_quant_algo, group_size)."""
    return json.loads((checkpoint_dir / "hf_quant_config.json").read_text()).get("quantization", {})


@task(name="export", cache_policy=step_policy("export", "work", "state"), persist_result=True)
def export_task(work: WorkDir, checkpoint: Path, state: QuantizedState, dtype: str) -> Path:
    return export_checkpoint(checkpoint, state, dtype, work.checkpoint)
