"""vLLM as a serving runtime: what `vllm serve` accepts as far as a rendered release passes it, the formats it serves,
its metric names, the release it renders (`vllm-serve.sh`) and the model id it reports. vLLM runs on the project's GPU
worker (scripts/gpu_worker/); what it answered there is recorded in tests/fixtures/vllm-0.26.0/ and replayed in CI.


- vllm-project/vllm vllm/model_executor/layers/quantization/modelopt.py at tag v0.26.0 (commit ffd46bfab, the
  released wheel's vllm/_version.py; the release the GPU worker runs): `ModelOptFp8Config.get_name()` is "modelopt"
  (FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO), `ModelOptNvFp4Config` "modelopt_fp4" (NVFP4, W4A16_NVFP4),
  `ModelOptMxFp8Config` "modelopt_mxfp8", `ModelOptMixedPrecisionConfig` "modelopt_mixed"; KV_CACHE_QUANT_ALGOS =
  ["FP8", "NVFP4"].
- vllm/config/cache.py (stored copy read by id 96596528): CacheDType = "auto" | "bfloat16" | "int8" | "fp8" |
  "fp8_e4m3" | "fp8_e5m2" | "fp8_inc" | "fp8_ds_mla".
- vllm/engine/arg_utils.py (EngineArgs.add_cli_args, the CLI of `vllm serve MODEL`): --host, --port,
  --quantization, --kv-cache-dtype, --tensor-parallel-size, --served-model-name, --max-model-len.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enginewright.errors import EnginewrightError, RuntimeLaneFailed
from enginewright.serving.runtimes.base import (
    ADA,
    AMPERE,
    TURING,
    ReleaseFiles,
    RuntimeMetrics,
    ServingRow,
    ServingRuntime,
    ServingTarget,
    write_script,
)

QUANTIZATION_BY_FORMAT = {"fp8": "modelopt", "fp8_pcpt": "modelopt", "nvfp4": "modelopt_fp4", "mxfp8": "modelopt_mxfp8"}
RENDERED_QUANTIZATIONS = frozenset({*QUANTIZATION_BY_FORMAT.values(), "modelopt_mixed"})
KV_CACHE_DTYPES = ("auto", "bfloat16", "int8", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")
VLLM_SERVE_OPTIONS = frozenset({"--host", "--port", "--quantization", "--kv-cache-dtype", "--tensor-parallel-size",
                                "--served-model-name", "--max-model-len"})


def quantization_of(checkpoint: Path) -> str | None:
    """vLLM's `quantization` for a ModelOpt export (its hf_quant_config.json), None for a plain checkpoint."""
    config = checkpoint / "hf_quant_config.json"
    if not config.is_file():
        return None
    algo = str(json.loads(config.read_text())["quantization"]["quant_algo"]).lower()
    named = {"fp8": "fp8", "fp8_per_channel_per_token": "fp8_pcpt", "nvfp4": "nvfp4", "mxfp8": "mxfp8"}
    if algo == "mixed_precision":
        return "modelopt_mixed"
    if algo not in named:
        raise RuntimeLaneFailed(f"vLLM's ModelOpt loader does not load {algo.upper()} checkpoints "
                                "(enginewright.serving.serving_runtimes)")
    return QUANTIZATION_BY_FORMAT[named[algo]]


def vllm_quantization(quantization: Mapping[str, Any]) -> str:
    """`--quantization` for a bundle's manifest `quantization` section: an AutoQuantize mix is `modelopt_mixed`."""
    if quantization.get("mix"):
        return "modelopt_mixed"
    return QUANTIZATION_BY_FORMAT[str(quantization.get("format"))]


class VllmContractError(EnginewrightError):
    """Something a rendered release would pass to `vllm serve` is not what vLLM accepts."""


def check_vllm_serve_argv(argv: list[str]) -> None:
    if len(argv) < 3 or argv[:2] != ["vllm", "serve"] or argv[2].startswith("-"):
        raise VllmContractError(f"not a `vllm serve MODEL ...` command line: {argv[:3]}")
    options = argv[3:]
    if len(options) % 2:
        raise VllmContractError(f"vllm serve {options[-1]} needs a value")
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag not in VLLM_SERVE_OPTIONS:
            raise VllmContractError(f"vllm serve does not take {flag!r}; it takes {', '.join(sorted(VLLM_SERVE_OPTIONS))}")
        if flag == "--kv-cache-dtype" and value not in KV_CACHE_DTYPES:
            raise VllmContractError(f"--kv-cache-dtype {value!r}: not one of {', '.join(KV_CACHE_DTYPES)}")
        if flag == "--quantization" and value not in RENDERED_QUANTIZATIONS:
            raise VllmContractError(f"--quantization {value!r}: enginewright renders only "
                                    f"{', '.join(sorted(RENDERED_QUANTIZATIONS))}")


# --- what it serves ---------------------------------------------------------------------------------------------
# vllm-project/vllm vllm/model_executor/layers/quantization/modelopt.py at tag v0.26.0 (commit ffd46bfab, from the
# released wheel's vllm/_version.py; the wheel is what scripts/gpu_worker installs and what ran on the H100):
# QUANT_ALGOS = FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO, NVFP4, W4A16_NVFP4, MXFP8, MIXED_PRECISION;
# ModelOptFp8Config.get_min_capability() = 89, ModelOptNvFp4Config 75 (Marlin W4A16 below Blackwell: FP4 weights,
# 16-bit activations), ModelOptMxFp8Config 80 (Marlin), ModelOptMixedPrecisionConfig 75; no INT4-AWQ, W4A8-AWQ,
# INT8-SQ. (An earlier reading at c9a5990 dated these "since 0.33.0" and refused MIXED_PRECISION: 0.26.0 has both.)
_SOURCE = "vllm modelopt.py @ v0.26.0 (ffd46bfab)"
ROWS = (
    ServingRow("fp8", "0.26.0", ADA, _SOURCE),
    ServingRow("fp8_pcpt", "0.26.0", ADA, _SOURCE),
    ServingRow("nvfp4", "0.26.0", TURING, _SOURCE + " (W4A16 through Marlin below compute capability 10.0)"),
    ServingRow("mxfp8", "0.26.0", AMPERE, _SOURCE + " (Marlin)"),
)
# MIXED_PRECISION: ModelOptMixedPrecisionConfig (FP8, NVFP4, W4A16_NVFP4 and MXFP8 layers; modelopt.py @ v0.26.0),
# `modelopt_mixed`, overriding any --quantization given for such a checkpoint (vllm/config/model.py
# `_verify_quantization`).
MIXED_PRECISION_SINCE = "0.26.0"

# vllm-project/vllm vllm/v1/metrics/loggers.py at tag v0.26.0 (commit ffd46bfab; the released wheel the GPU worker
# runs), at /metrics; every name checked against the exposition scraped from a live `vllm serve` 0.26.0 on an H100
# (tests/fixtures/vllm-0.26.0/responses.json, tests/test_vllm_recordings.py). The time per output token is
# `vllm:request_time_per_output_token_seconds` there: the `vllm:time_per_output_token_seconds` read earlier
# (@ 005a810) does not exist in 0.26.0, so a rule on it would never have fired.
# vLLM has no error counter: failures are `vllm:request_success_total{finished_reason=~"abort|error"}`
# (vllm/v1/engine/__init__.py `FinishReason` at v0.26.0: abort = aborted by the client, error = request-level
# internal error, answered 500; both label values are exported at 0 from the start, as the recording shows).
METRICS = RuntimeMetrics(
    metrics_path="/metrics", success="vllm:request_success_total", errors=None,
    e2e_latency="vllm:e2e_request_latency_seconds", ttft="vllm:time_to_first_token_seconds",
    time_per_output_token="vllm:request_time_per_output_token_seconds",
    queue_time="vllm:request_queue_time_seconds",
    waiting="vllm:num_requests_waiting", generation_tokens="vllm:generation_tokens_total",
    kv_cache_usage="vllm:kv_cache_usage_perc", source="vllm/v1/metrics/loggers.py @ v0.26.0")


# --- the release it renders -------------------------------------------------------------------------------------
def serve_command(served_as: str, manifest: Mapping[str, Any], target: ServingTarget) -> list[str]:
    """`vllm serve` for the release's checkpoint link (a path relative to the release folder, which is also the
    id /v1/models reports: the release's own, so verification tells it from the one still serving): ModelOpt's
    loader for its format, its KV-cache dtype."""
    quantization = manifest.get("quantization", {})
    argv = ["vllm", "serve", served_as, "--host", target.host, "--port", str(target.port),
            "--quantization", vllm_quantization(quantization),
            "--kv-cache-dtype", "fp8" if quantization.get("kv_cache_quant_algo") == "FP8" else "auto",
            "--served-model-name", served_as]
    if target.tensor_parallel_size is not None:
        argv += ["--tensor-parallel-size", str(target.tensor_parallel_size)]
    check_vllm_serve_argv(argv)
    return argv


def served_path(bundle_dir: Path, target: ServingTarget) -> Path:
    return bundle_dir / "checkpoint"


def parallelism(bundle_dir: Path, target: ServingTarget) -> dict[str, Any]:
    """vLLM serves with the target's `--tensor-parallel-size` (1 without one): the bundle's llm_api.yaml is
    TensorRT-LLM's and is not passed to vLLM."""
    return {"tensor_parallel_size": target.tensor_parallel_size or 1}


def render(folder: Path, bundle_dir: Path, manifest: Mapping[str, Any], target: ServingTarget, served_as: str,
           model_path: Path) -> ReleaseFiles:
    command = serve_command(served_as, manifest, target)
    write_script(folder / "vllm-serve.sh", "serve with vLLM's OpenAI-compatible server, from this folder.", command)
    return ReleaseFiles(command, {"vllm_serve": command})


def served_model_id(deployment: Mapping[str, Any]) -> str:
    """`vllm serve --served-model-name NAME` reports NAME on /v1/models."""
    argv = deployment["vllm_serve"]
    return str(argv[argv.index("--served-model-name") + 1])


def describe(deployment: Mapping[str, Any], release: Path) -> str:
    return f"- vllm serve: `{' '.join(deployment['vllm_serve'])}`\n"


RUNTIME = ServingRuntime(
    name="vllm", label="vLLM",
    # the release the project's GPU worker installs and runs (scripts/gpu_worker/vllm.lock), whose ModelOpt loader
    # the rows above were read in
    default_version="0.26.0",
    rows=ROWS, mixed_precision_since=MIXED_PRECISION_SINCE, metrics=METRICS, script="vllm-serve.sh",
    served_path=served_path, parallelism=parallelism, render=render, served_model_id=served_model_id,
    describe=describe)
