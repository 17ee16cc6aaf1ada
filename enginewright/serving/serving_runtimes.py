"""Which runtime serves which format: one table of format × runtime × minimum runtime version × GPU compute
capability. It drives the deploy fit check, the model card and `build --dry-run`; calibrating is the formats
table's column (enginewright.config.formats: `calibrate_min_capability`). No torch import: the deploy side reads it.

A format is served by a runtime at a version V on a GPU of capability C when some row of that pair has
`since <= V` and `capability <= C`; where several rows apply, the least demanding wins (NVFP4 on Hopper needs a
newer TensorRT-LLM than on Blackwell). A pair without rows is not served at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

RuntimeName = Literal["tensorrt_llm", "vllm"]
RUNTIME_LABELS: dict[str, str] = {"tensorrt_llm": "TensorRT-LLM", "vllm": "vLLM"}

# The serving image a deploy target assumes when it names no version. TensorRT-LLM: the worker image's pin
# (docker/gpu-worker.Dockerfile). vLLM: the release the project's GPU worker installs and runs
# (scripts/gpu_worker/vllm.lock), whose ModelOpt loader the rows below were read in.
DEFAULT_VERSIONS: dict[str, str] = {"tensorrt_llm": "1.3.0rc20", "vllm": "0.26.0"}

BLACKWELL, HOPPER, ADA, TURING = (10, 0), (9, 0), (8, 9), (7, 5)


@dataclass(frozen=True)
class ServingRow:
    format: str
    runtime: RuntimeName
    since: str  # the oldest runtime version known to serve it
    capability: tuple[int, int] | None  # the GPU it needs; None: any CUDA GPU the runtime supports
    source: str  # where the fact was read


_TRTLLM = "NVIDIA/TensorRT-LLM; ../shared/FIELD_NOTES.md"
# vllm-project/vllm vllm/model_executor/layers/quantization/modelopt.py at tag v0.26.0 (commit ffd46bfab, from the
# released wheel's vllm/_version.py; the wheel is what scripts/gpu_worker installs and what ran on the H100):
# QUANT_ALGOS = FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO, NVFP4, W4A16_NVFP4, MXFP8, MIXED_PRECISION;
# ModelOptFp8Config.get_min_capability() = 89, ModelOptNvFp4Config 75 (Marlin W4A16 below Blackwell: FP4 weights,
# 16-bit activations), ModelOptMxFp8Config 80 (Marlin), ModelOptMixedPrecisionConfig 75; no INT4-AWQ, W4A8-AWQ,
# INT8-SQ. (An earlier reading at c9a5990 dated these "since 0.33.0" and refused MIXED_PRECISION: 0.26.0 has both.)
_VLLM = "vllm modelopt.py @ v0.26.0 (ffd46bfab)"

ROWS: tuple[ServingRow, ...] = (
    ServingRow("fp8", "tensorrt_llm", "1.0", ADA, _TRTLLM),
    ServingRow("int8_sq", "tensorrt_llm", "1.0", None, _TRTLLM),
    ServingRow("int4_awq", "tensorrt_llm", "1.0", None, _TRTLLM),
    ServingRow("w4a8_awq", "tensorrt_llm", "1.0", ADA, _TRTLLM),
    ServingRow("int8_wo", "tensorrt_llm", "1.0", None, _TRTLLM),
    ServingRow("fp8_pcpt", "tensorrt_llm", "1.0", ADA, _TRTLLM),
    ServingRow("nvfp4", "tensorrt_llm", "1.0", BLACKWELL, _TRTLLM),
    ServingRow("nvfp4", "tensorrt_llm", "1.3.0rc20", HOPPER, _TRTLLM + " (Marlin NVFP4 kernels for Hopper)"),
    ServingRow("nvfp4_awq", "tensorrt_llm", "1.0", BLACKWELL, _TRTLLM),
    ServingRow("mxfp8", "tensorrt_llm", "1.0", BLACKWELL, _TRTLLM),
    ServingRow("mxfp4", "tensorrt_llm", "1.0", BLACKWELL, _TRTLLM),
    ServingRow("fp8", "vllm", "0.26.0", ADA, _VLLM),
    ServingRow("fp8_pcpt", "vllm", "0.26.0", ADA, _VLLM),
    ServingRow("nvfp4", "vllm", "0.26.0", TURING, _VLLM + " (W4A16 through Marlin below compute capability 10.0)"),
    ServingRow("mxfp8", "vllm", "0.26.0", (8, 0), _VLLM + " (Marlin)"),
)


def parse_version(runtime: str, version: str) -> Version:
    """A runtime version the table can compare; ValueError naming what it knows otherwise."""
    oldest = min((Version(r.since) for r in ROWS if r.runtime == runtime), default=None)
    if oldest is None:
        raise ValueError(f"runtime {runtime!r} is not in the serving table; known: {', '.join(RUNTIME_LABELS)}")
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise ValueError(f"{version!r} is not a version (for example {DEFAULT_VERSIONS[runtime]!r})") from None
    if parsed < oldest:
        raise ValueError(f"{RUNTIME_LABELS[runtime]} {version} is older than any version the serving table knows "
                         f"({oldest}+)")
    return parsed


def serving_problem(fmt: str, runtime: str, version: str, capability: tuple[int, int]) -> str | None:
    """None when `runtime` at `version` serves `fmt` on a GPU of `capability`; else the reason, in words."""
    label = RUNTIME_LABELS.get(runtime, runtime)
    rows = [r for r in ROWS if r.format == fmt and r.runtime == runtime]
    if not rows:
        servers = sorted({RUNTIME_LABELS[r.runtime] for r in ROWS if r.format == fmt})
        return f"{label} cannot load {fmt} checkpoints" + (f" (served by {', '.join(servers)})" if servers else "")
    parsed = parse_version(runtime, version)
    released = [r for r in rows if Version(r.since) <= parsed]
    if not released:
        return f"{fmt} needs {label} ≥ {min(Version(r.since) for r in rows)}; the target runs {version}"
    if any(r.capability is None or r.capability <= capability for r in released):
        return None
    need = min(r.capability for r in released if r.capability is not None)
    newer = [r for r in rows if r.capability is not None and r.capability <= capability]
    hint = f" ({label} ≥ {newer[0].since} serves it on {capability[0]}.{capability[1]})" if newer else ""
    return (f"{fmt} on {label} {version} needs a GPU of compute capability {need[0]}.{need[1]}+; the target has "
            f"{capability[0]}.{capability[1]}{hint}")


def serving_summary(fmt: str) -> list[str]:
    """One line per runtime that serves `fmt`: from which version, on which GPUs."""
    return [f"{label}: {runtime_summary(fmt, runtime)}" for runtime, label in RUNTIME_LABELS.items()]


def runtime_summary(fmt: str, runtime: str) -> str:
    """Where `runtime` serves `fmt`: "not served", or each row's version and GPUs."""
    rows = [r for r in ROWS if r.format == fmt and r.runtime == runtime]
    if not rows:
        return "not served"
    return "; ".join(f"≥ {r.since} on " + (f"compute capability {r.capability[0]}.{r.capability[1]}+" if r.capability
                                          else "any supported GPU") for r in rows)


# A MIXED_PRECISION checkpoint (an AutoQuantize mix) names a quant_algo per layer in hf_quant_config.json's
# `quantized_layers`. TensorRT-LLM's PyTorch backend reads each into that layer's own QuantConfig
# (NVIDIA/TensorRT-LLM tensorrt_llm/_torch/model_config.py @ 008e0af8980fc560003631ba4ac37828836a91c8,
# ModelConfig._build_modelopt_quant_config) and a fused q/k/v or gate/up Linear takes its first member's
# (tensorrt_llm/_torch/models/modeling_utils.py @ 000a01de66f0eab4ab05640711f0253f50f5209c,
# DecoderModelForCausalLM.__post_init__); the version is the pinned worker image's, the oldest checked. vLLM 0.26.0
# loads it as `modelopt_mixed` (ModelOptMixedPrecisionConfig: FP8, NVFP4, W4A16_NVFP4 and MXFP8 layers; vllm
# modelopt.py @ v0.26.0), overriding any --quantization given for such a checkpoint (vllm/config/model.py
# `_verify_quantization`).
MIXED_PRECISION_SINCE: dict[str, str] = {"tensorrt_llm": "1.3.0rc20", "vllm": "0.26.0"}


def mix_serving_problem(groups: dict[str, str], runtime: str, version: str, capability: tuple[int, int]) -> str | None:
    """None when `runtime` serves this mix (layer group → format, "none" for 16-bit); else the first reason, naming
    the layer and its format."""
    label = RUNTIME_LABELS.get(runtime, runtime)
    since = MIXED_PRECISION_SINCE.get(runtime)
    if since is None:
        servers = ", ".join(RUNTIME_LABELS[r] for r in MIXED_PRECISION_SINCE)
        return f"{label} cannot load MIXED_PRECISION (AutoQuantize) checkpoints (served by {servers})"
    if parse_version(runtime, version) < Version(since):
        return f"a MIXED_PRECISION checkpoint needs {label} ≥ {since}; the target runs {version}"
    for layer, fmt in groups.items():
        problem = None if fmt == "none" else serving_problem(fmt, runtime, version, capability)
        if problem is not None:
            return f"layer {layer} is {fmt}: {problem}"
    return None


def mix_serving_summary(formats: list[str]) -> list[str]:
    """`serving_summary` for a mix of `formats`: one line per runtime."""
    lines = []
    for runtime, label in RUNTIME_LABELS.items():
        since = MIXED_PRECISION_SINCE.get(runtime)
        if since is None:
            lines.append(f"{label}: not served (no MIXED_PRECISION loader)")
            continue
        per_format = [f"{fmt} {runtime_summary(fmt, runtime)}" for fmt in formats]
        lines.append(f"{label}: MIXED_PRECISION ≥ {since}, where each layer's format is served: " + "; ".join(per_format))
    return lines


# Where a runtime computes a format otherwise than the build simulated it (ModelOpt's fake quantization of weights and
# activations), the build's golden records are not what that release should reproduce. NVFP4 below Blackwell: both
# runtimes serve FP4 weights with 16-bit activations through Marlin kernels (vLLM: ModelOptNvFp4Config, "Marlin W4A16
# below Blackwell", modelopt.py @ v0.26.0; TensorRT-LLM 1.3.0rc20: the Hopper NVFP4 path is Marlin, weight-only —
# ../shared/FIELD_NOTES.md), while the build simulated 4-bit activations too.
WEIGHT_ONLY_BELOW: dict[str, tuple[int, int]] = {"nvfp4": BLACKWELL}


def simulation_mismatch(fmt: str | None, capability: tuple[int, int]) -> str | None:
    """Why the build's simulated candidate is not what this GPU's runtime computes for `fmt`; None when it is."""
    below = WEIGHT_ONLY_BELOW.get(fmt or "")
    if below is not None and capability < below:
        return (f"{fmt} on compute capability {capability[0]}.{capability[1]} is served weight-only (16-bit "
                f"activations) while the build simulated {fmt} activations too")
    return None
