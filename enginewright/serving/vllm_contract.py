"""What `vllm serve` accepts, as far as a rendered vLLM release passes it (vLLM cannot run on these machines).

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
