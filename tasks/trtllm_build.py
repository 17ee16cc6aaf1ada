"""The TensorRT-LLM step: load the bundle with the LLM API, warm up, smoke-generate (GPU workers only).

Where this worker has no CUDA GPU or no `tensorrt_llm` (which ships only in NVIDIA's TensorRT-LLM
container image), the step ends in a Completed state named "Skipped" whose message says why, and the
manifest records `engine: {status: skipped, reason: ...}`. Nothing pretends an engine exists.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from prefect import task
from prefect.states import Completed

from enginewright.caching import keyed_by


def engine_lane_status() -> dict[str, str]:
    """{"status": "skipped", "reason": ...}, or {"status": "available"} on a GPU worker with TensorRT-LLM."""
    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "no CUDA GPU on this worker"}
    if importlib.util.find_spec("tensorrt_llm") is None:
        return {
            "status": "skipped",
            "reason": "tensorrt_llm is not installed on this worker (it ships in NVIDIA's TensorRT-LLM image; see docker/)",
        }
    # The LLM-API load / warm-up / smoke generation and the legacy trtllm-build lane are the GPU-lane issue.
    return {"status": "skipped", "reason": "the TensorRT-LLM load-and-build step is not implemented yet"}


@task(name="tensorrt-llm-build", cache_key_fn=keyed_by("tensorrt-llm-build"), persist_result=True)
def trtllm_build_task(cache_key: str) -> Any:
    status = engine_lane_status()
    if status["status"] == "skipped":
        return Completed(name="Skipped", message=f"Skipped: {status['reason']}", data=status)
    return status

