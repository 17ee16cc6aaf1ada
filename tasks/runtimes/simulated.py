"""The simulated runtime: the calibrated model restored from its saved state with ModelOpt's fake quantization,
its weights the exported checkpoint's own codes (tasks/export_verify.py), evaluated by lm-eval's HFLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from enginewright.spec import EvaluationSpec
from tasks.export_verify import load_exported_weights
from tasks.quantize import QuantizedState, restore_quantized


def load_candidate(checkpoint: Path, state: QuantizedState, dtype: str, fold: bool,
                   exported: Path | None = None) -> torch.nn.Module:
    """The calibrated model restored from its saved state; weight quantizers folded when `fold` — into the
    exported checkpoint's weights when `exported` is given, else ModelOpt's own QDQ."""
    model = restore_quantized(checkpoint, state, dtype)
    if exported is not None:
        load_exported_weights(model, exported)
    elif fold:
        fold_weights(model)
    return model


def fold_weights(model: torch.nn.Module) -> None:
    """Store each quantized weight as its quantize-dequantize result once and turn the weight quantizers off.

    Activation quantizers stay on, so the forward pass computes what the fake-quantized model computes.
    """
    import modelopt.torch.quantization as mtq

    with torch.no_grad():
        mtq.fold_weight(model)


def hf_lm(model: torch.nn.Module, tokenizer: Any, spec: EvaluationSpec) -> Any:
    """lm-eval's HFLM over a loaded model: the one way baseline and simulated candidate are evaluated."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size,
                softmax_dtype=None if spec.logprob_dtype == "model" else spec.logprob_dtype)


def make_lm(checkpoint: Path, state: QuantizedState, dtype: str, spec: EvaluationSpec, exported: Path,
            tokenizer: Any) -> Any:
    model = load_candidate(checkpoint, state, dtype, fold=spec.fold_weights,
                           exported=exported if spec.fold_weights else None)
    return hf_lm(model, tokenizer, spec)
