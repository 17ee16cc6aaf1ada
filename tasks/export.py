"""Export the calibrated model as ModelOpt's unified Hugging Face checkpoint, the bundle's `checkpoint/`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from prefect import get_run_logger, task

from enginewright.errors import ExportVerificationError
from enginewright.keys.atomic import written_whole
from enginewright.keys.cache_policies import step_policy
from enginewright.keys.work_dir import WorkDir
from enginewright.quant.calibrate import QuantizedState
from enginewright.quant.memory_plan import MemoryPlan
from enginewright.quant.models import load_tokenizer
from enginewright.quant.placement import enforce_device_limit
from tasks.export_verify import ExportVerification, read_exported, snapshot_evaluated, verify_export
from tasks.quantize import restore_quantized


@dataclass(frozen=True)
class ExportResult:
    checkpoint: Path
    verification: ExportVerification
    memory_plan: MemoryPlan | None = None  # where it was exported (the manifest records it)


def export_and_verify(checkpoint: Path, state: QuantizedState, dtype: str, out_dir: Path,
                      plan: MemoryPlan | None = None, offload_dir: Path | None = None) -> ExportResult:
    """Export, then prove the exported bytes are the evaluated model (tasks/export_verify.py), from one restore:
    the evaluated weights and scales are taken from the model just before ModelOpt's export changes it. Placed as
    `plan` says: with offloaded layers ModelOpt exports one layer at a time (its streaming export)."""
    if plan is not None:
        enforce_device_limit(plan)
    model = restore_quantized(checkpoint, state, dtype, plan, offload_dir)
    evaluated = snapshot_evaluated(model)
    write_checkpoint(model, checkpoint, dtype, out_dir)
    verification = verify_export(read_exported(out_dir), evaluated,
                                 json.loads((checkpoint / "config.json").read_text()), dtype, out_dir)
    return ExportResult(out_dir, verification, plan)


def export_checkpoint(checkpoint: Path, state: QuantizedState, dtype: str, out_dir: Path) -> Path:
    """Write `out_dir` (config.json, safetensors, hf_quant_config.json, tokenizer) all at once or not at all."""
    return write_checkpoint(restore_quantized(checkpoint, state, dtype), checkpoint, dtype, out_dir)


def write_checkpoint(model: torch.nn.Module, checkpoint: Path, dtype: str, out_dir: Path) -> Path:
    from modelopt.torch.export import export_hf_checkpoint

    with written_whole(out_dir, folder=True) as tmp:
        with torch.inference_mode():
            export_hf_checkpoint(model, dtype=getattr(torch, dtype), export_dir=tmp)
        load_tokenizer(checkpoint).save_pretrained(tmp)
        if not (tmp / "hf_quant_config.json").is_file():
            raise ExportVerificationError(f"ModelOpt export wrote no hf_quant_config.json in {tmp}")
        readable_by_all(tmp)
    return out_dir


def readable_by_all(folder: Path) -> None:
    """The weights file is written owner-only (mode 0600) by the export, every other file 0644: a serving container
    running as another user could not read it. Every file of the checkpoint gets the same mode, 0644."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o644)


def exported_quant_algo(checkpoint_dir: Path) -> dict:
    """The `quantization` section TensorRT-LLM reads (quant_algo, kv_cache_quant_algo, group_size)."""
    return json.loads((checkpoint_dir / "hf_quant_config.json").read_text()).get("quantization", {})


@task(name="export", cache_policy=step_policy("export", "work", "state"), persist_result=True)
def export_task(work: WorkDir, checkpoint: Path, state: QuantizedState, dtype: str,
                plan: MemoryPlan | None = None) -> ExportResult:
    """The bundle's checkpoint; an export that is not the evaluated model fails here, before registration."""
    result = export_and_verify(checkpoint, state, dtype, work.checkpoint, plan, work.offload_dir)
    get_run_logger().info(result.verification.summary())
    return result
