"""Render the serving configuration of one bundle for one target, and switch a target to it atomically.

A release folder holds everything a serving host needs to start the bundle, two ways:

    releases/v3-20261126T230000Z/
      deployment.json                    what was deployed: model, version, bundle id and path, target, time
      llm_api.yaml                       the bundle's LLM-API options (+ the target's overrides)
      <model>-v3 -> ../../bundles/v3/checkpoint
                                         what trtllm-serve is given: a link named for the release, because
                                         trtllm-serve's /v1/models reports the model directory's *name* — so
                                         the verify step can tell this release from the one still serving;
                                         relative, so `<model>/` (bundles/ and releases/) moves as one folder
      trtllm-serve.sh                    `cd` to its own folder, then `trtllm-serve <model>-v3 --host … --port …
                                         --extra_llm_api_options llm_api.yaml`: no path of this machine in it
      (vllm-serve.sh                     instead of llm_api.yaml, trtllm-serve.sh and triton/, for a target with
                                         `runtime: vllm`: `cd` to its own folder, then `vllm serve <model>-v3
                                         --served-model-name <model>-v3 --quantization modelopt …` — relative to
                                         the release, so the folder (links followed) serves on any host)
      triton/tensorrt_llm/1/model.yaml   Triton's TensorRT-LLM LLM-API model: LLM() arguments + triton_config
      triton/tensorrt_llm/config.pbtxt   copied with 1/model.py and 1/helpers.py from the target's
                                         `triton_llmapi_template` (same TensorRT-LLM release as the image),
                                         or, without one, triton/README.md says what to copy
      prometheus/scrape.yml, alerts.yml, alerts_test.yml
                                         the runtime's metrics scraped, alert rules with the version in each
                                         summary, and promtool's tests of them (enginewright.serving.monitoring)

The serving side reads `<model>/current`, a symlink replaced in one rename: it points at the old release or the
new one, never at a half-written folder. A refused deploy never touches it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from enginewright.config.schemas import Manifest
from enginewright.serving.monitoring import ReleaseLabels, render_monitoring
from enginewright.serving.targets import DeployTarget
from enginewright.serving.trtllm_contract import check_llm_api_options, check_serve_argv
from enginewright.serving.vllm_contract import check_vllm_serve_argv, vllm_quantization

TRITON_MODEL = "tensorrt_llm"
TRITON_TEMPLATE_FILES = ("config.pbtxt", "1/model.py", "1/helpers.py")
# Triton's LLM-API model keeps these two keys for itself; the rest of model.yaml is LLM() arguments.
TRITON_CONFIG = {"max_batch_size": 0, "decoupled": False}


def model_dir(serving_root: Path, target: DeployTarget, model_name: str) -> Path:
    return serving_root / target.name / model_name


# Every release renders Prometheus rules (prometheus/), so its server must export what they read: trtllm-serve mounts
# /prometheus/metrics only with return_perf_metrics, and its queue and KV-cache gauges need the iteration stats
# (enginewright.serving.trtllm_contract.LlmApiOptions cites both). Without them every alert would be blind.
MONITORING_OPTIONS = {"return_perf_metrics": True, "enable_iter_perf_stats": True}


def serving_options(bundle_dir: Path, target: DeployTarget) -> dict[str, Any]:
    """The bundle's llm_api.yaml with the target's overrides and the monitoring switches applied."""
    options = yaml.safe_load((bundle_dir / "llm_api.yaml").read_text()) or {}
    options.update(MONITORING_OPTIONS)
    if target.tensor_parallel_size is not None:
        options["tensor_parallel_size"] = target.tensor_parallel_size
    options["trust_remote_code"] = False
    if target.serve_legacy_engine:
        options["backend"] = "tensorrt"
    check_llm_api_options(options)
    return options


def served_path(bundle_dir: Path, target: DeployTarget) -> Path:
    """What TensorRT-LLM loads: the legacy engine folder where the target serves engines, else the checkpoint."""
    return bundle_dir / ("engine" if target.serve_legacy_engine else "checkpoint")


def release_model_name(model_name: str, version: str) -> str:
    """The name the endpoint reports on /v1/models for this release (a file name: no '/' or spaces): trtllm-serve
    reports the served directory's name, vLLM its `--served-model-name`."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{model_name}-v{version}")


def trtllm_serve_command(model_path: Path, llm_api_yaml: Path, target: DeployTarget) -> list[str]:
    argv = ["trtllm-serve", str(model_path), "--host", target.host, "--port", str(target.port),
            "--extra_llm_api_options", str(llm_api_yaml)]
    check_serve_argv(argv)
    return argv


def vllm_serve_command(served_as: str, manifest: Manifest, target: DeployTarget) -> list[str]:
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


def _write_script(path: Path, comment: str, command: list[str], in_own_folder: bool = False) -> None:
    cd = 'cd "$(dirname "$0")" || exit 1\n' if in_own_folder else ""
    path.write_text(f"#!/bin/sh\n# Rendered by enginewright deploy; {comment}\n{cd}exec {shlex.join(command)} \"$@\"\n")
    path.chmod(0o755)


def render_release(bundle_dir: Path, manifest: Manifest, target: DeployTarget, model_name: str, version: str,
                   release_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """Write a complete release folder (through a `.partial` sibling); returns its deployment.json."""
    now = now or datetime.now(UTC)
    partial = release_dir.with_name(release_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model_path = served_path(bundle_dir, target)
        serving: dict[str, Any]
        served_as = release_dir / release_model_name(model_name, version)
        # Relative to the release folder (its final place, not the .partial being written): bundles/ beside releases/.
        link = os.path.relpath(model_path.resolve(), release_dir.parent.resolve() / release_dir.name)
        (partial / served_as.name).symlink_to(link, target_is_directory=True)
        if target.runtime == "vllm":
            command = vllm_serve_command(served_as.name, manifest, target)
            _write_script(partial / "vllm-serve.sh", "serve with vLLM's OpenAI-compatible server, from this folder.",
                          command, in_own_folder=True)
            serving = {"runtime": "vllm", "vllm_serve": command, "served_as": str(served_as)}
        else:
            options = serving_options(bundle_dir, target)
            (partial / "llm_api.yaml").write_text(yaml.safe_dump(options, sort_keys=False))
            command = trtllm_serve_command(Path(served_as.name), Path("llm_api.yaml"), target)
            _write_script(partial / "trtllm-serve.sh", "serve with TensorRT-LLM's OpenAI-compatible server, from this "
                          "folder.", command, in_own_folder=True)
            _render_triton(partial / "triton", model_path, options, target)
            serving = {"runtime": "tensorrt_llm", "trtllm_serve": command, "served_as": str(served_as),
                       "triton_model_repository": str(release_dir / "triton")}
        _render_monitoring(partial / "prometheus", target, model_name, version)
        deployment = {
            "model": model_name, "version": version, "bundle_id": manifest["bundle_id"],
            "bundle_dir": str(bundle_dir), "served_path": str(model_path),
            "quantization": manifest.get("quantization", {}).get("format"),
            "target": target.model_dump(mode="json"), "rendered_at": now.isoformat(timespec="seconds"),
            **serving,
        }
        (partial / "deployment.json").write_text(json.dumps(deployment, indent=2) + "\n")
        shutil.rmtree(release_dir, ignore_errors=True)
        partial.rename(release_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return deployment


def _render_monitoring(folder: Path, target: DeployTarget, model_name: str, version: str) -> None:
    folder.mkdir()
    labels = ReleaseLabels(model=model_name, version=version, target=target.name,
                           job=f"{target.name}-{model_name}".lower().replace("_", "-"))
    for name, text in render_monitoring(target.runtime, labels, target.metrics_address, target.alerts).items():
        (folder / name).write_text(text)


def _render_triton(repository: Path, model_path: Path, options: dict[str, Any], target: DeployTarget) -> None:
    model = repository / TRITON_MODEL
    (model / "1").mkdir(parents=True)
    model_yaml = {"model": str(model_path), **options, "triton_config": dict(TRITON_CONFIG)}
    (model / "1" / "model.yaml").write_text(yaml.safe_dump(model_yaml, sort_keys=False))
    if target.triton_llmapi_template is not None:
        for name in TRITON_TEMPLATE_FILES:
            shutil.copy2(target.triton_llmapi_template / name, model / name)
        return
    (repository / "README.md").write_text(
        "Triton model repository for TensorRT-LLM's LLM-API model. Before starting Triton, copy `config.pbtxt`,\n"
        "`1/model.py` and `1/helpers.py` from `triton_backend/all_models/llmapi/tensorrt_llm/` of the TensorRT-LLM\n"
        "release your Triton image runs into `tensorrt_llm/` (or set the target's `triton_llmapi_template` and\n"
        "deploy again), then: `tritonserver --model-repository=<this folder>`.\n")


def current_release(model_root: Path) -> Path | None:
    link = model_root / "current"
    return link.resolve() if link.is_symlink() else None


def switch_current(model_root: Path, release_dir: Path) -> None:
    """Point `<model_root>/current` at `release_dir` in one atomic rename."""
    tmp = model_root / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(release_dir.relative_to(model_root))
    os.replace(tmp, model_root / "current")


def read_deployment(release_dir: Path) -> dict[str, Any]:
    return json.loads((release_dir / "deployment.json").read_text())
