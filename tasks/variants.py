"""The matrix's variants: each an ordinary `enginewright build` in its own process, at most `parallel` at a time on
a queue of GPU slots (on the CPU, shares of the cores); each variant's outcome is read from the report its build
writes on success and on failure, never from its log. Then the comparison's MLflow run and the recommendation's
alias. Plain functions: `flows/matrix.py` only composes them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from enginewright.registry_client import registry_client
from enginewright.spec import BuildSpec
from tasks.compare import RECOMMENDED_ALIAS, RecommendationPolicy, VariantResult, VariantStatus
from tasks.register import experiment_id

MATRIX_EXPERIMENT = "enginewright-matrices"


@dataclass
class _Running:
    fmt: str
    slot: int  # which GPU (or CPU share) it holds until it ends
    process: subprocess.Popen
    report: Path
    log: Path


def variant_spec(spec: BuildSpec, fmt: str) -> BuildSpec:
    return spec.model_copy(update={"quantization": spec.quantization.model_copy(update={"format": fmt})})


def worker_env(slot: int, parallel: int, api_url: str) -> dict[str, str]:
    """Environment of one variant process: the parent's Prefect API, its GPU or its share of the CPU cores."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    gpus = torch.cuda.device_count()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def _start(spec: BuildSpec, fmt: str, run_dir: Path, slot: int, parallel: int, api_url: str) -> _Running:
    folder = run_dir / fmt
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(variant_spec(spec, fmt).model_dump(mode="json"), sort_keys=False))
    report, log = folder / "report.json", folder / "build.log"
    report.unlink(missing_ok=True)
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "enginewright.cli", "build", "--spec", str(spec_file), "--report-json", str(report)],
            stdout=handle, stderr=subprocess.STDOUT, env=worker_env(slot, parallel, api_url),
        )
    return _Running(fmt, slot, process, report, log)


def _result(running: _Running) -> VariantResult:
    import json

    code = running.process.returncode
    if running.report.is_file():  # the build writes its report on success and on failure
        report = json.loads(running.report.read_text())
        if report.get("status") == "registered":
            return VariantResult(running.fmt, "registered", report=report)
        status: VariantStatus = report.get("status", "failed")
        return VariantResult(running.fmt, status, reason=str(report.get("error", ""))[:300])
    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}, no report"  # it died before writing one
    return VariantResult(running.fmt, "failed", reason=f"{reason} (see {running.log})")


def run_variants(spec: BuildSpec, formats: list[str], parallel: int, run_dir: Path, api_url: str,
                 log=print) -> list[VariantResult]:
    """Run each variant's build in its own process, at most `parallel` at a time; results in `formats` order."""
    waiting, done = list(formats), {}
    running: list[_Running] = []
    free_slots = list(range(parallel))
    while waiting or running:
        while waiting and free_slots:
            fmt = waiting.pop(0)
            running.append(_start(spec, fmt, run_dir, free_slots.pop(0), parallel, api_url))
            log(f"variant {fmt}: started (pid {running[-1].process.pid}, log {running[-1].log})")
        for item in [r for r in running if r.process.poll() is not None]:
            running.remove(item)
            free_slots.append(item.slot)
            done[item.fmt] = _result(item)
            log(f"variant {item.fmt}: {done[item.fmt].status} {done[item.fmt].reason}".rstrip())
        time.sleep(1)
    return [done[fmt] for fmt in formats]


def record_comparison(variants: list[VariantResult], chosen: VariantResult | None, reason: str, table: str,
                      plot: Path, model_name: str, policy: RecommendationPolicy, tracking_uri: str,
                      artifact_root: str) -> str:
    """An MLflow run holding the table and the plot; alias + tags on the chosen version. Returns the run id."""
    client = registry_client(tracking_uri)
    run = client.create_run(experiment_id(client, artifact_root, MATRIX_EXPERIMENT), run_name=f"matrix-{model_name}", tags={
        "matrix.formats": ",".join(v.format for v in variants), "matrix.policy": policy.model_dump_json(),
        "matrix.recommended": chosen.format if chosen else "none", "mlflow.note.content": table})
    client.log_text(run.info.run_id, table, "comparison.md")
    client.log_artifact(run.info.run_id, str(plot))
    client.set_terminated(run.info.run_id)
    if chosen is not None:
        version = chosen.report["version"]
        client.set_registered_model_alias(model_name, RECOMMENDED_ALIAS, version)
        client.set_model_version_tag(model_name, version, "recommended.reason", reason)
        client.set_model_version_tag(model_name, version, "recommended.matrix_run", run.info.run_id)
    return run.info.run_id
