"""Does a registered bundle fit a deploy target? Every reason it does not, in words a person can act on.

- the gate: only a version whose accuracy gate passed (`gate.verdict=pass` on the version) is deployed;
- the quantization format against the target's runtime, its version and its GPU (enginewright.serving.serving_runtimes):
  vLLM loads no INT4-AWQ, W4A8-AWQ or INT8-SmoothQuant checkpoint; FP8 needs compute capability 8.9+; NVFP4 needs
  Blackwell on TensorRT-LLM before 1.3.0rc20, Hopper from it; an AutoQuantize mix, layer group by layer group
  (only TensorRT-LLM loads MIXED_PRECISION);
- a legacy TensorRT engine, when the target asks to serve one: the bundle must carry an engine built on the
  same GPU architecture and TensorRT version, because an engine runs nowhere else;
- parallelism: one model instance takes tensor × pipeline parallel GPUs, as the release serves them
  (each runtime module's `parallelism`: for TensorRT-LLM the bundle's llm_api.yaml with the target's overrides), and the
  target's node must have that many.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enginewright.config.schemas import Manifest
from enginewright.serving.serving_runtimes import mix_serving_problem, serving_problem
from enginewright.serving.targets import DeployTarget


def fit_problems(manifest: Manifest, version_tags: Mapping[str, str], target: DeployTarget,
                 served: Mapping[str, Any] | None = None) -> list[str]:
    """Empty when the bundle can be served on `target`; otherwise one sentence per reason. `served`: the LLM-API
    options the release would serve with (`serving_options`)."""
    problems = []
    served = served or {}
    tensor = int(served.get("tensor_parallel_size", 1))
    pipeline = int(served.get("pipeline_parallel_size", 1))
    if tensor * pipeline > target.gpu_count:
        problems.append(f"one instance needs {tensor * pipeline} GPUs (tensor_parallel_size {tensor} × "
                        f"pipeline_parallel_size {pipeline}); target {target.name!r} has gpu_count {target.gpu_count}")
    verdict = version_tags.get("gate.verdict")
    if verdict != "pass":
        problems.append(f"the accuracy gate verdict is {verdict!r}; only versions whose gate passed are deployed")
    quantization = manifest.get("quantization", {})
    mix = quantization.get("mix")
    problem = (mix_serving_problem(mix["groups"], target.runtime, target.served_runtime_version, target.capability)
               if mix else serving_problem(str(quantization.get("format")), target.runtime,
                                           target.served_runtime_version, target.capability))
    if problem is not None:
        problems.append(f"target {target.name!r} ({target.gpu}): {problem}")
    if target.serve_legacy_engine:
        engine = manifest.get("engine", {})
        if engine.get("status") != "built":
            problems.append("a legacy engine was asked for, but this bundle has none "
                            f"(engine lane: {engine.get('status', 'unknown')}); serve its checkpoint instead")
        else:
            built_for = (engine.get("compute_capability"), engine.get("tensorrt"))
            wanted = (target.compute_capability, target.tensorrt_version)
            if built_for != wanted:
                problems.append(f"the legacy engine was built for compute capability {built_for[0]} with TensorRT "
                                f"{built_for[1]}; target {target.name!r} has {wanted[0]} with TensorRT {wanted[1]}")
    return problems
