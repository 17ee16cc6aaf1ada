"""ModelOpt's calibration of a loaded model: the format's preset as a private config (AWQ block size, KV cache,
layer by layer), the forward loop over the calibration set, `mtq.quantize`, and the export's fused-layer
requantization applied before the state is saved; `QuantizedState` is what a calibration leaves on disk.

Used by the quantize step (tasks/quantize.py) and AutoQuantize's mix (tasks/auto_quantize.py). ModelOpt is imported
inside the functions: `load_model` imports it first, on a thread of its own (enginewright/quant/modelopt_import.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from enginewright.config.formats import FORMATS
from enginewright.config.spec import QuantizationSpec
from enginewright.errors import InputError
from enginewright.ops.console import progress_bar
from enginewright.quant.devices import calibration_batch_size, check_format_supported, compute_capability
from enginewright.quant.memory_plan import MemoryPlan

AWQ_BLOCK_CANDIDATES = (128, 64, 32, 16)


@dataclass(frozen=True)
class QuantizedState:
    path: Path  # mto.save file: the calibrated ModelOpt state and weights
    sha256: str
    recipe: str  # ModelOpt preset name
    awq_block_size: int | None
    memory_plan: MemoryPlan | None = None  # where it was calibrated (the manifest records it)
    # Average bits per weight of the Linear layers, lm_head at 16 (ModelOpt's effective bits: enginewright/quant/effective_bits.py),
    # or a mix's as ModelOpt's re-solve achieved it.
    effective_bits: float | None = None
    mix: dict[str, Any] | None = None  # an AutoQuantize build's budget, bits and group → format (Mix.summary)

    def cache_identity(self) -> str:
        return self.sha256


def quantized_in_features(model: torch.nn.Module) -> set[int]:
    """Input dimensions of the Linear layers ModelOpt's presets quantize (lm_head is excluded by them)."""
    return {m.in_features for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in name}


def choose_awq_block_size(in_features: set[int], requested: int | None) -> int:
    if requested is not None:
        bad = sorted(d for d in in_features if d % requested)
        if bad:
            raise InputError(
                f"quantization.awq_block_size={requested} does not divide the model's layer widths {bad}; "
                f"use one of {[b for b in AWQ_BLOCK_CANDIDATES if not any(d % b for d in in_features)]}"
            )
        return requested
    for block in AWQ_BLOCK_CANDIDATES:
        if all(d % block == 0 for d in in_features):
            return block
    raise InputError(f"no AWQ block size in {AWQ_BLOCK_CANDIDATES} divides the layer widths {sorted(in_features)}")


def quant_config(spec: QuantizationSpec, awq_block_size: int | None, layerwise: bool = False) -> dict[str, Any]:
    """A private copy of the ModelOpt preset, with the block size and KV-cache entries applied; `layerwise`: ModelOpt
    calibrates one decoder layer at a time (`algorithm.layerwise.enable`, nvidia-modelopt 0.47.0
    `modelopt/torch/quantization/config.py::LayerwiseConfig`), as the memory plan's layerwise_offload needs."""
    import modelopt.torch.quantization as mtq

    config = copy.deepcopy(getattr(mtq, FORMATS[spec.format].modelopt_preset))
    if layerwise:
        algorithm = config.get("algorithm", "max")
        algorithm = {"method": algorithm} if isinstance(algorithm, str) or algorithm is None else dict(algorithm)
        config["algorithm"] = {**algorithm, "layerwise": {"enable": True}}
    if awq_block_size is not None:
        for entry in config["quant_cfg"]:
            cfgs = entry.get("cfg")
            for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:
                if isinstance(cfg, dict) and isinstance(cfg.get("block_sizes"), dict) and -1 in cfg["block_sizes"]:
                    cfg["block_sizes"][-1] = awq_block_size
    if spec.kv_cache:
        config["quant_cfg"] = list(config["quant_cfg"]) + list(mtq.FP8_KV_CFG["quant_cfg"])
    return config


def forward_loop_over(input_ids: torch.Tensor, batch_size: int):
    """ModelOpt calls this with the model to collect activation statistics (once per layer when it calibrates layer
    by layer). Shows progress. No KV cache: calibration never decodes, and under ModelOpt 0.47's layerwise calibration
    a cache passed between the replays of layer 0 left its o_proj input scale at 0.0 (transformers 5.14;
    tests/test_memory_plan.py compares layerwise with whole-model scales). The logits of the last position only
    (`logits_to_keep=1`): lm_head is never quantized, and all positions' float32 logits were most of a batch's
    memory (6 bytes × vocabulary per token)."""

    def forward_loop(model: torch.nn.Module) -> None:
        embeddings: Any = model.get_input_embeddings()  # type: ignore[operator]  # transformers' PreTrainedModel method
        device = embeddings.weight.device  # where the inputs go: the plans keep the embeddings resident
        device = torch.device("cpu") if device.type == "meta" else device
        batches = input_ids.split(batch_size)
        with torch.no_grad():
            for batch in progress_bar(batches, desc=f"calibrating on {len(input_ids)} sequences", unit="batch",
                                      leave=False):
                model(input_ids=batch.to(device), use_cache=False, logits_to_keep=1)

    return forward_loop


def quantize_in_place(model: torch.nn.Module, input_ids: torch.Tensor, spec: QuantizationSpec,
                      batch_size: int | str, plan: MemoryPlan | None = None) -> int | None:
    """`mtq.quantize` on a loaded model, calibrated over `input_ids` (layer by layer where `plan` says so); returns
    the AWQ block size used."""
    import modelopt.torch.quantization as mtq

    check_format_supported(spec.format, compute_capability())
    block = choose_awq_block_size(quantized_in_features(model), spec.awq_block_size) if FORMATS[spec.format].awq_blocks else None
    batch = calibration_batch_size(batch_size, model.config, input_ids.shape[1],
                                   limit_bytes=plan.device_limit_bytes if plan else None)
    mtq.quantize(model, quant_config(spec, block, layerwise=plan is not None and plan.layerwise),
                 forward_loop=forward_loop_over(input_ids, batch))
    return block


def prepare_as_exported(model: torch.nn.Module) -> None:
    """Apply now what ModelOpt's export applies first: layers that read one input (q/k/v, gate/up) get one
    pre-quant scale and one input scale, and their weights are requantized to match (export's
    `requantize_resmooth_fused_llm_layers`). Done before the state is saved, the model that is evaluated is the
    model that is exported; done only at export (as before), FP8 weights differed from the evaluated ones by a
    quantization step and AWQ's q/k/v and gate/up were requantized after evaluation (tasks/export_verify.py)."""
    from modelopt.torch.export.unified_export_hf import requantize_resmooth_fused_llm_layers

    with torch.no_grad():
        requantize_resmooth_fused_llm_layers(model)
