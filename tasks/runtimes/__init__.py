"""What computes the candidate's log-likelihoods: one module per runtime, one small interface.

- `simulated`: ModelOpt's fake quantization in PyTorch, computing with the exported weight codes — what runs on the
  CPU and on GPU workers without TensorRT-LLM;
- `tensorrt_llm`: the bundle itself, loaded by TensorRT-LLM's LLM API with the bundle's `llm_api.yaml`, through our
  own lm-eval model class.

A runtime module has `make_lm(...)`, which returns an lm-eval model. `choose` picks the runtime from what the
TensorRT-LLM step found on this worker. A runtime that cannot load or fails mid-evaluation raises `RuntimeLaneFailed`;
the evaluation then falls back to `simulated` and records why: a skipped runtime evaluation, never a failed build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from enginewright.errors import EnginewrightError
from enginewright.trtllm_contract import PROMPT_TOKEN_LOGPROBS_SINCE, version_at_least

RuntimeName = Literal["simulated", "tensorrt_llm"]


class RuntimeLaneFailed(EnginewrightError):
    """A runtime could not evaluate the candidate; the evaluation falls back to the simulated one."""


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: RuntimeName
    reason: str  # why this runtime evaluates the candidate (or why the runtime evaluation was skipped)
    version: str | None = None  # the runtime's own version, where it is not enginewright's PyTorch stack

    def record(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "reason": self.reason, "version": self.version}


def choose(engine: dict[str, Any]) -> RuntimeChoice:
    """The runtime for the candidate, from the TensorRT-LLM step's result on this worker."""
    status, version = engine.get("status"), engine.get("tensorrt_llm")
    if status not in ("loaded", "built"):
        return RuntimeChoice("simulated", f"runtime evaluation skipped: {engine.get('reason', status)}")
    if not version_at_least(version, PROMPT_TOKEN_LOGPROBS_SINCE):
        return RuntimeChoice("simulated", f"runtime evaluation skipped: TensorRT-LLM {version} returns only the top-k "
                             f"prompt log-probabilities; loglikelihood needs ≥ {PROMPT_TOKEN_LOGPROBS_SINCE}", version)
    return RuntimeChoice("tensorrt_llm", f"TensorRT-LLM {version} loaded the bundle with its llm_api.yaml", version)
