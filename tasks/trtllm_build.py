"""The TensorRT-LLM steps, on GPU workers running NVIDIA's TensorRT-LLM image.

- load: the bundle's checkpoint with the LLM API (PyTorch backend), options from the bundle's `llm_api.yaml`
  merged the way `trtllm-serve --extra_llm_api_options` merges them (`update_llm_args_with_extra_dict`); a warm-up
  generation (CUDA-graph capture, autotuning); then greedy smoke generations, recorded with how many are
  degenerate (the flow's smoke check is what passes or fails a candidate).
- legacy engine (`runtime.legacy_engine`, TensorRT-LLM ≤ 1.3.0rc20 only): the LLM API's TensorRT backend builds an
  engine for this GPU and saves it to `bundle/engine/`. Engines only run on the SM and TensorRT version they
  were built for, so both enter the build key (enginewright.keys.environment.key_tool_versions).
- benchmark: `trtllm-bench throughput` on a synthetic dataset; its report is logged on the model version.
- evaluation of the exact runtime: not yet — lm-eval's stock `trtllm` class misreads the runtime's prompt
  log-probabilities (issue 19); the candidate is evaluated simulated, with the exported weights, everywhere.

Where this worker has no CUDA GPU or no `tensorrt_llm`, the step ends in a Completed state named "Skipped"
with the reason, and the manifest records `engine: {status: skipped, reason: ...}`. Nothing pretends an
engine exists. This code is written against TensorRT-LLM's source (1.2 and main) but has not run: no machine
available to this project has TensorRT-LLM (tests/test_trtllm_lane.py drives it with a stand-in module).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from prefect import task
from prefect.states import Completed

from enginewright.config.schemas import EngineLane
from enginewright.errors import EnginewrightError
from enginewright.keys.cache_policies import step_policy
from enginewright.keys.work_dir import WorkDir
from enginewright.serving.runtimes.tensorrt_llm import (
    LAST_ENGINE_RELEASE,
    check_bench_argv,
    check_bench_report,
    check_build_config,
    version_at_most,
)
from tasks.smoke import is_degenerate


def tensorrt_llm_version() -> str | None:
    try:
        return importlib.metadata.version("tensorrt-llm")
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorrt_version() -> str | None:
    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        return None


def engine_lane_status() -> EngineLane:
    """{"status": "skipped", "reason": ...}, or {"status": "available"} on a GPU worker with TensorRT-LLM."""
    if not torch.cuda.is_available():
        return {"status": "skipped", "reason": "no CUDA GPU on this worker"}
    if importlib.util.find_spec("tensorrt_llm") is None:
        return {
            "status": "skipped",
            "reason": "tensorrt_llm is not installed on this worker (it ships in NVIDIA's TensorRT-LLM image; see docker/)",
        }
    return {"status": "available"}


def llm_api_kwargs(checkpoint_dir: Path, llm_api_yaml: Path) -> dict[str, Any]:
    """LLM(...) keyword arguments: the model plus the bundle's YAML, merged as trtllm-serve merges it."""
    from tensorrt_llm.llmapi.llm_args import update_llm_args_with_extra_dict

    options = yaml.safe_load(llm_api_yaml.read_text()) or {}
    options.pop("backend", None)  # `LLM` is the PyTorch backend; the key is there for trtllm-serve / trtllm-bench
    return update_llm_args_with_extra_dict({"model": str(checkpoint_dir)}, options)


def load_and_smoke(bundle_dir: Path, prompts: list[str], max_new_tokens: int) -> EngineLane:
    """Load the bundle with the LLM API, warm up, generate greedily; the smoke verdict and timings."""
    from tensorrt_llm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(**llm_api_kwargs(bundle_dir / "checkpoint", bundle_dir / "llm_api.yaml"))
    loaded = time.perf_counter()
    try:
        llm.generate(prompts[:1], SamplingParams(max_tokens=8, temperature=0.0))
        warmed = time.perf_counter()
        outputs = llm.generate(prompts, SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
        generated = time.perf_counter()
    finally:
        llm.shutdown()
    completions = [(list(o.outputs[0].token_ids), o.outputs[0].text) for o in outputs]
    degenerate = sum(is_degenerate(ids, text) for ids, text in completions)
    new_tokens = sum(len(ids) for ids, _ in completions)
    return {
        "status": "loaded", "load_seconds": round(loaded - started, 3), "warmup_seconds": round(warmed - loaded, 3),
        "generate_seconds": round(generated - warmed, 3),
        "generate_tokens_per_second": round(new_tokens / max(generated - warmed, 1e-9), 1),
        # Recorded, not judged: the flow's smoke check compares candidate and baseline continuations.
        "smoke_degenerate": f"{degenerate} of {len(prompts)}",
        "smoke_texts": [text for _, text in completions],
    }


def legacy_engine_supported(version: str | None) -> bool:
    """The TensorRT (engine) backend exists up to LAST_ENGINE_RELEASE (enginewright.serving.runtimes.tensorrt_llm)."""
    return version_at_most(version, LAST_ENGINE_RELEASE)


def build_legacy_engine(bundle_dir: Path, max_batch_size: int, max_num_tokens: int) -> Path:
    """TensorRT engine for this GPU through the LLM API's TensorRT backend (what `trtllm-build` does)."""
    version = tensorrt_llm_version()
    if not legacy_engine_supported(version):
        raise EnginewrightError(f"runtime.legacy_engine needs TensorRT-LLM ≤ {LAST_ENGINE_RELEASE} (the engine path "
                                f"was removed after it); this worker has {version}. Serve the checkpoint instead")
    from tensorrt_llm import BuildConfig
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM

    out = bundle_dir / "engine"
    partial = out.with_name("engine.partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_options = {"max_batch_size": max_batch_size, "max_num_tokens": max_num_tokens}
    check_build_config(build_options)
    llm = EngineLLM(model=str(bundle_dir / "checkpoint"), build_config=BuildConfig(**build_options))
    try:
        llm.save(str(partial))
    finally:
        llm.shutdown()
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def bench_command_lines(bundle_dir: Path, work: Path, requests: int = 256, isl: int = 128,
                        osl: int = 128) -> tuple[list[str], list[str]]:
    """The two `trtllm-bench` runs: a synthetic dataset, then throughput with the bundle's own llm_api.yaml.

    `--model` is the checkpoint directory, not a registry name: prepare-dataset loads its tokenizer from
    `--model` before `--model_path`, and builds run offline (enginewright.serving.runtimes.tensorrt_llm)."""
    checkpoint = str(bundle_dir / "checkpoint")
    dataset, report = work / "dataset.jsonl", work / "report.json"
    base = ["--model", checkpoint, "--model_path", checkpoint, "--workspace", str(work)]
    prepare = [*base, "prepare-dataset", "--output", str(dataset), "token-norm-dist",
               "--num-requests", str(requests), "--input-mean", str(isl), "--output-mean", str(osl),
               "--input-stdev", "0", "--output-stdev", "0"]
    throughput = [*base, "throughput", "--dataset", str(dataset), "--backend", "pytorch",
                  "--extra_llm_api_options", str(bundle_dir / "llm_api.yaml"), "--report_json", str(report)]
    for argv in (prepare, throughput):
        check_bench_argv(argv)
    return prepare, throughput


def trtllm_bench(bundle_dir: Path, work: Path) -> dict[str, Any]:
    """Run both; returns the throughput run's JSON report, checked against the real report's keys."""
    work.mkdir(parents=True, exist_ok=True)
    prepare, throughput = bench_command_lines(bundle_dir, work)
    subprocess.run(["trtllm-bench", *prepare], check=True)
    subprocess.run(["trtllm-bench", *throughput], check=True)
    report = json.loads((work / "report.json").read_text())
    check_bench_report(report)
    return report


def bench_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The throughput figures of a trtllm-bench JSON report (numeric leaves whose name says throughput) by report
    path, e.g. `performance.system_output_throughput_tok_s` (what the matrix's `fastest` policy reads)."""
    found: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, int | float) and "throughput" in path.lower():
            found[path] = float(node)

    walk(report, "")
    return found


def run_engine_lane(bundle_dir: Path, prompts: list[str], max_new_tokens: int, legacy_engine: bool,
                    max_batch_size: int, max_num_tokens: int, work: Path) -> EngineLane:
    status = engine_lane_status()
    if status["status"] == "skipped":
        if legacy_engine:
            status["reason"] += "; runtime.legacy_engine asked for an engine, none was built"
        return status
    result = load_and_smoke(bundle_dir, prompts, max_new_tokens)
    result["tensorrt_llm"] = tensorrt_llm_version() or "unknown"
    result["bench"] = bench_metrics(trtllm_bench(bundle_dir, work / "trtllm-bench"))
    if legacy_engine:
        build_legacy_engine(bundle_dir, max_batch_size, max_num_tokens)
        # An engine runs only on this SM and this TensorRT: recorded for the deploy flow's fit check.
        major, minor = torch.cuda.get_device_capability(0)
        result["status"], result["compute_capability"] = "built", f"{major}.{minor}"
        result["tensorrt"] = tensorrt_version() or "unknown"
    return result


@task(name="tensorrt-llm-build", persist_result=True,
      cache_policy=step_policy("tensorrt-llm-build", "work", "prompts", "max_new_tokens"))
def trtllm_build_task(work: WorkDir, prompts: list[str], max_new_tokens: int, legacy_engine: bool,
                      max_batch_size: int, max_num_tokens: int) -> Any:
    result = run_engine_lane(work.bundle, prompts, max_new_tokens, legacy_engine, max_batch_size, max_num_tokens,
                             work.path)
    if result["status"] == "skipped":
        return Completed(name="Skipped", message=f"Skipped: {result['reason']}", data=result)
    return result
