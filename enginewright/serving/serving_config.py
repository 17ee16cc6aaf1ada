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
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enginewright.config.schemas import Manifest
from enginewright.serving.monitoring import ReleaseLabels, render_monitoring
from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.targets import DeployTarget


def model_dir(serving_root: Path, target: DeployTarget, model_name: str) -> Path:
    return serving_root / target.name / model_name


def release_model_name(model_name: str, version: str) -> str:
    """The name the endpoint reports on /v1/models for this release (a file name: no '/' or spaces): trtllm-serve
    reports the served directory's name, vLLM its `--served-model-name`."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{model_name}-v{version}")


def render_release(bundle_dir: Path, manifest: Manifest, target: DeployTarget, model_name: str, version: str,
                   release_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """Write a complete release folder (through a `.partial` sibling); returns its deployment.json."""
    now = now or datetime.now(UTC)
    partial = release_dir.with_name(release_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        runtime = RUNTIMES[target.runtime]
        model_path = runtime.served_path(bundle_dir, target)
        served_as = release_dir / release_model_name(model_name, version)
        # Relative to the release folder (its final place, not the .partial being written): bundles/ beside releases/.
        link = os.path.relpath(model_path.resolve(), release_dir.parent.resolve() / release_dir.name)
        (partial / served_as.name).symlink_to(link, target_is_directory=True)
        files = runtime.render(partial, bundle_dir, manifest, target, served_as.name, model_path)
        _render_monitoring(partial / "prometheus", target, model_name, version)
        deployment = {
            "model": model_name, "version": version, "bundle_id": manifest["bundle_id"],
            "bundle_dir": str(bundle_dir), "served_path": str(model_path),
            "quantization": manifest.get("quantization", {}).get("format"),
            "target": target.model_dump(mode="json"), "rendered_at": now.isoformat(timespec="seconds"),
            "runtime": runtime.name, "served_as": str(served_as), **files.fields,
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
