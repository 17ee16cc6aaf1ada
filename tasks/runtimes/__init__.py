"""What computes the candidate's log-likelihoods: one module per runtime, one small interface.

- `simulated`: ModelOpt's fake quantization in PyTorch, computing with the exported weight codes — what runs on the
  CPU and on GPU workers without TensorRT-LLM;
- `tensorrt_llm`: the bundle itself, loaded by TensorRT-LLM's LLM API with the bundle's `llm_api.yaml`, through our
  own lm-eval model class;
- `vllm`: the bundle's checkpoint loaded by vLLM in the worker's vLLM environment (`ENGINEWRIGHT_VLLM_PYTHON`), scored
  through a subprocess (vLLM never shares the build's interpreter).

A runtime module has `make_lm(...)`, which returns an lm-eval model. `choose` picks the runtime from what the
TensorRT-LLM step found on this worker, else vLLM where the worker has a vLLM environment that loads the format. A runtime that cannot load or fails mid-evaluation raises `RuntimeLaneFailed`;
the evaluation then falls back to `simulated` and records why: a skipped runtime evaluation, never a failed build.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from enginewright.config.schemas import EngineLane
from enginewright.errors import RuntimeLaneFailed
from enginewright.serving.runtimes.tensorrt_llm import PROMPT_TOKEN_LOGPROBS_SINCE, version_at_least
from enginewright.serving.runtimes.vllm import quantization_of

RuntimeName = Literal["simulated", "tensorrt_llm", "vllm"]


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: RuntimeName
    reason: str  # why this runtime evaluates the candidate (or why the runtime evaluation was skipped)
    version: str | None = None  # the runtime's own version, where it is not enginewright's PyTorch stack
    python: str | None = field(default=None, compare=False)  # vllm: the environment's python that runs the scorer

    def record(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "reason": self.reason, "version": self.version}


def choose(engine: EngineLane, vllm_python: str | None = None, checkpoint: Path | None = None) -> RuntimeChoice:
    """The runtime for the candidate: TensorRT-LLM where its step loaded the bundle on this worker, else vLLM where
    `vllm_python` (Settings.vllm_python) names a vLLM environment that loads the exported `checkpoint`."""
    status, version = engine.get("status"), engine.get("tensorrt_llm")
    if status not in ("loaded", "built"):
        skipped = f"runtime evaluation skipped: {engine.get('reason', status)}"
        return choose_vllm(vllm_python, checkpoint, skipped) if vllm_python and checkpoint else RuntimeChoice(
            "simulated", skipped)
    if not version_at_least(version, PROMPT_TOKEN_LOGPROBS_SINCE):
        return RuntimeChoice("simulated", f"runtime evaluation skipped: TensorRT-LLM {version} returns only the top-k "
                             f"prompt log-probabilities; loglikelihood needs ≥ {PROMPT_TOKEN_LOGPROBS_SINCE}", version)
    return RuntimeChoice("tensorrt_llm", f"TensorRT-LLM {version} loaded the bundle with its llm_api.yaml", version)


def vllm_version(python: str) -> str:
    """The vLLM installed in that environment, read without importing it (seconds, not a minute)."""
    answer = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
                            capture_output=True, text=True, timeout=120)
    if answer.returncode != 0:
        raise RuntimeLaneFailed(f"{python} has no vLLM: {(answer.stderr.strip().splitlines() or ['?'])[-1]}")
    return answer.stdout.strip()


def choose_vllm(python: str, checkpoint: Path, no_tensorrt_llm: str) -> RuntimeChoice:
    try:
        version = vllm_version(python)
        quantization = quantization_of(checkpoint)
    except (RuntimeLaneFailed, OSError, subprocess.TimeoutExpired) as exc:
        return RuntimeChoice("simulated", f"{no_tensorrt_llm}; vLLM not used: {exc}")
    return RuntimeChoice("vllm", f"vLLM {version} ({python}) loads the bundle's checkpoint as "
                         f"{quantization or 'unquantized'}", version, python)
