"""The simulated runtime: the calibrated model restored from its saved state with ModelOpt's fake quantization,
its weights the exported checkpoint's own codes (tasks/export_verify.py), evaluated by lm-eval's HFLM.

On the CPU its static FP8 activation quantizers run as one fused loop (`fuse_fp8_activations`): ModelOpt's CPU path
(`modelopt/torch/quantization/tensor_quant.py::_fp8_eager`) makes seven passes over every activation — to float32,
scale, clamp, to E4M3, back to float32, unscale, to the model's dtype — which took more time than the matrix
products themselves and made the FP8 candidate evaluate at half the baseline's speed.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch

from enginewright.config.spec import EvaluationSpec
from enginewright.quant.calibrate import QuantizedState
from tasks.export_verify import load_exported_weights
from tasks.quantize import restore_quantized

FUSED_FP8_BACKEND = "enginewright-fused-fp8"  # a ModelOpt quantizer backend (register_quant_backend)
log = logging.getLogger(__name__)


def load_candidate(checkpoint: Path, state: QuantizedState, dtype: str, fold: bool,
                   exported: Path | None = None, fuse: bool = True) -> torch.nn.Module:
    """The calibrated model restored from its saved state; weight quantizers folded when `fold` — into the
    exported checkpoint's weights when `exported` is given, else ModelOpt's own QDQ; static FP8 activation
    quantizers fused on the CPU when `fuse` (the same bits, faster)."""
    model = restore_quantized(checkpoint, state, dtype)
    if exported is not None:
        load_exported_weights(model, exported)
    elif fold:
        fold_weights(model)
    if fuse:
        fuse_fp8_activations(model)
    return model


def _fake_e4m3(x: torch.Tensor, scale: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    """ModelOpt's `_fp8_eager` with the scales computed: the same operations in the same order and precision."""
    y = (x.to(torch.float32) * scale).clamp(min=-448.0, max=448.0)
    return (y.to(torch.float8_e4m3fn).to(torch.float32) * scale_inv).to(x.dtype)


@functools.cache
def _fused_e4m3() -> Any:
    """`_fake_e4m3` compiled by TorchInductor into one loop (any shape; compiled on first use, about 10 s here
    and 5 s once inductor's on-disk cache has it)."""
    return torch.compile(_fake_e4m3, dynamic=True)


def _fused_fp8_entrypoint(inputs: torch.Tensor, quantizer: Any) -> torch.Tensor:
    """The backend's forward: ModelOpt calls it in place of `scaled_e4m3` for the quantizers `fuse_fp8_activations`
    chose (enabled, static per-tensor E4M3, no bias); the scales exactly as `_fp8_eager` computes them."""
    amax = quantizer.amax.to(torch.float32)
    safe_amax = torch.where(amax <= 1.0 / (1 << 24), torch.ones_like(amax), amax)
    scale = 448.0 / safe_amax
    return _fused_e4m3()(inputs, scale, 1 / scale)


def _static_fp8_per_tensor(quantizer: Any) -> bool:
    amax = getattr(quantizer, "_amax", None)
    return (quantizer.is_enabled and quantizer.fake_quant and quantizer.num_bits == (4, 3)
            and quantizer.block_sizes is None and quantizer.bias is None and not quantizer.rotate_is_enabled
            and quantizer.backend is None and amax is not None and amax.numel() == 1)


def fuse_fp8_activations(model: torch.nn.Module) -> int:
    """Route the model's static per-tensor FP8 quantizers through the fused loop, on the CPU only (on a GPU ModelOpt
    has its own CUDA kernel); returns how many. Where TorchInductor cannot compile here (no C++ compiler), nothing
    changes and a warning says so."""
    from modelopt.torch.quantization.nn import TensorQuantizer
    from modelopt.torch.quantization.nn.modules.tensor_quantizer import (
        is_registered_quant_backend,
        register_quant_backend,
    )

    chosen = [m for m in model.modules() if isinstance(m, TensorQuantizer) and _static_fp8_per_tensor(m)
              and m.amax.device.type == "cpu"]
    if not chosen:
        return 0
    try:  # compiled now, for the rank and dtype of the activations to come (batch, positions, features)
        probe = torch.linspace(-3, 3, 64).reshape(2, 4, 8).to(next(model.parameters()).dtype)
        _fused_e4m3()(probe, torch.tensor(448.0 / 2), torch.tensor(2 / 448.0))
    except Exception as exc:  # noqa: BLE001 — inductor's failures have no common type; ModelOpt's path still works
        log.warning("FP8 activations stay on ModelOpt's eager path (TorchInductor cannot compile here: %s)", exc)
        return 0
    if not is_registered_quant_backend(FUSED_FP8_BACKEND):
        register_quant_backend(FUSED_FP8_BACKEND, _fused_fp8_entrypoint)
    for quantizer in chosen:
        quantizer.backend = FUSED_FP8_BACKEND
    return len(chosen)


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
