"""The quantization formats, one row each: the ModelOpt preset, what the export writes, which GPUs can calibrate it
(which runtime serves it where: enginewright.serving.serving_runtimes). Adding a format is adding a row (tests/test_quantize_export.py takes every CPU row through quantize →
export → verification). No torch import here: the deploy side reads this table without loading a framework."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    modelopt_preset: str  # a config dict of modelopt.torch.quantization
    quant_algo: str | None  # what export writes into hf_quant_config.json; None: not exported on this machine yet
    calibrate_min_capability: tuple[int, int] | None  # None: calibrates on the CPU too
    awq_blocks: bool  # INT4 weight blocks whose size must divide every quantized layer's input dimension
    description: str
    weight_bits: float  # stored bits per quantized weight, block scales included (NVFP4: 4 + one FP8 scale per 16)
    # The memory plan may calibrate it layer by layer with layers offloaded (enginewright/quant/memory_plan.py). Not the AWQ
    # family: on an offloaded layer, ModelOpt 0.47's export preparation (requantize_resmooth_fused_llm_layers, which
    # re-smooths q/k/v and gate/up to one pre-quant scale) leaves those weight quantizers' scales on the meta device,
    # so the saved state lacks them (tests/test_memory_plan.py shows that failure, and that the other formats match
    # one device exactly).
    layerwise_offload: bool = True
    # May be an AutoQuantize candidate (enginewright.config.spec.AutoQuantizeSpec): the formats the search was run with here
    # (tests/test_auto_quantize.py) and, on GPUs, the NVFP4 family. Not w4a8_awq or fp8_pcpt: never searched here.
    auto_quantize: bool = True


BLACKWELL, HOPPER = (10, 0), (9, 0)

_ROWS = (
    Format("fp8", "FP8_DEFAULT_CFG", "FP8", None, False, "FP8_DEFAULT", 8),
    Format("int8_sq", "INT8_SMOOTHQUANT_CFG", "W8A8_SQ_PER_CHANNEL", None, False, "INT8 SmoothQuant", 8),
    Format("int4_awq", "INT4_AWQ_CFG", "W4A16_AWQ", None, True, "W4A16 AWQ", 4, layerwise_offload=False),
    Format("w4a8_awq", "W4A8_AWQ_BETA_CFG", "W4A8_AWQ", None, True, "W4A8 AWQ", 4, layerwise_offload=False,
           auto_quantize=False),
    Format("int8_wo", "INT8_WEIGHT_ONLY_CFG", "W8A16", None, False, "INT8 weight-only", 8),
    Format("fp8_pcpt", "FP8_PER_CHANNEL_PER_TOKEN_CFG", "FP8_PER_CHANNEL_PER_TOKEN", None, False,
           "FP8 per-channel weights, per-token acts", 8, auto_quantize=False),
    # ModelOpt's CUDA kernels: these calibrate only on a GPU (enginewright.quant.devices.check_format_supported); NVFP4's
    # fake quantization runs on Hopper too (../shared/FIELD_NOTES.md), serving it is the serving table's question
    Format("nvfp4", "NVFP4_DEFAULT_CFG", None, HOPPER, False, "NVFP4 weights and activations", 4.5),
    Format("nvfp4_awq", "NVFP4_AWQ_LITE_CFG", None, BLACKWELL, False, "NVFP4 with AWQ-lite", 4.5, layerwise_offload=False),
    Format("mxfp8", "MXFP8_DEFAULT_CFG", None, BLACKWELL, False, "MXFP8", 8.25, auto_quantize=False),
    Format("mxfp4", "MXFP4_DEFAULT_CFG", None, BLACKWELL, False, "MXFP4", 4.25, auto_quantize=False),
)
FORMATS: dict[str, Format] = {row.name: row for row in _ROWS}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)
CPU_FORMATS: tuple[str, ...] = tuple(f.name for f in _ROWS if f.calibrate_min_capability is None)
