"""Quantize with NVIDIA Model Optimizer: `mtq.quantize` with our own forward loop (enginewright/quant/calibrate.py),
state kept with `mto.save`; an AutoQuantize build's mix is calibrated by tasks/auto_quantize.py.

The calibrated state is saved so that a failed export, or an evaluation in another process, never
recalibrates: `restore_quantized` rebuilds the fake-quantized model from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from prefect import task

from enginewright.config.formats import FORMATS
from enginewright.config.spec import QuantizationSpec
from enginewright.errors import InputError
from enginewright.keys.atomic import written_whole
from enginewright.keys.cache_policies import step_policy
from enginewright.keys.hashing import sha256_file
from enginewright.keys.work_dir import WorkDir
from enginewright.quant.calibrate import QuantizedState, prepare_as_exported, quantize_in_place
from enginewright.quant.effective_bits import plain_effective_bits
from enginewright.quant.memory_plan import MemoryPlan
from enginewright.quant.models import load_model
from enginewright.quant.placement import enforce_device_limit, restore_quantized_into, save_quantized
from tasks.auto_quantize import calibrate_mix
from tasks.calibration import CalibrationSet, load_calibration_ids

# ModelOpt is imported by `load_model`, on a thread of its own (enginewright/quant/modelopt_import.py says why).


def calibrate_and_quantize(
    checkpoint: Path, calib: CalibrationSet, spec: QuantizationSpec, dtype: str, batch_size: int | str,
    out_file: Path, plan: MemoryPlan | None = None, offload_dir: Path | None = None,
) -> QuantizedState:
    """Calibrate as `plan` places the model (None: one device, as `load_model` alone does)."""
    if plan is not None:
        enforce_device_limit(plan)
    model = load_model(checkpoint, dtype, plan=plan, offload_dir=offload_dir)
    block = quantize_in_place(model, load_calibration_ids(calib), spec, batch_size, plan)
    prepare_as_exported(model)
    with written_whole(out_file) as tmp:
        save_quantized(model, tmp)
    return QuantizedState(path=out_file, sha256=sha256_file(out_file), recipe=FORMATS[spec.format].modelopt_preset,
                          awq_block_size=block, memory_plan=plan,
                          effective_bits=plain_effective_bits(checkpoint, spec.format))


def restore_quantized(checkpoint: Path, state: QuantizedState, dtype: str, plan: MemoryPlan | None = None,
                      offload_dir: Path | None = None) -> torch.nn.Module:
    """A fresh model with the calibrated quantizers of `state` (fake-quantized), placed as `plan` says."""
    if sha256_file(state.path) != state.sha256:
        raise InputError(f"quantized state {state.path} changed since it was saved; delete the build dir")
    model = load_model(checkpoint, dtype, plan=plan, offload_dir=offload_dir)
    return restore_quantized_into(model, state.path).eval()


# The build key (in `work`) names the source revision and the recipe; the calibration set is keyed by content, an
# AutoQuantize search by its state file's content. The memory plan is not in the key: every plan calibrates to the
# same scales (tests/test_memory_plan.py).
@task(name="quantize", cache_policy=step_policy("quantize", "work", "calib", "search"), persist_result=True)
def quantize_task(
    work: WorkDir, checkpoint: Path, calib: CalibrationSet, spec: QuantizationSpec, dtype: str, batch_size: int | str,
    plan: MemoryPlan | None = None, search: Any = None,
) -> QuantizedState:
    """One format calibrated as `plan` places the model, or (spec.auto, with the search state `search` from
    tasks/auto_quantize.search_task) the budget's mix re-solved and calibrated on one device."""
    if spec.auto is not None:
        return calibrate_mix(checkpoint, calib, spec.auto, search, dtype, batch_size, work.quantized_state)
    return calibrate_and_quantize(checkpoint, calib, spec, dtype, batch_size, work.quantized_state, plan,
                                  work.offload_dir)
