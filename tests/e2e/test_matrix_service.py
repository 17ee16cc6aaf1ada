"""The matrix in service mode for real: a Prefect server on PostgreSQL (`enginewright stack`), the deployments of
prefect.yaml, a process worker for the `gpu` pool, the global concurrency limit `gpu-builds` at one slot. Each
variant is a flow run of the build deployment; their builds never overlap (the limit), a refused variant is read
from its run's final state, the registered ones from their `build-report` artifacts, and one is recommended."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from enginewright.registry_client import registry_client
from enginewright.settings import Settings
from enginewright.stack import Stack, port_in_use
from tests.e2e.test_matrix import write_spec
from tests.e2e.test_watch_service import ROOT, build_runs, prefect_cli, stop

pytestmark = pytest.mark.e2e


def test_service_mode_submits_each_variant_to_the_build_deployment_one_gpu_slot_at_a_time(
        tiny_model: Path, shared_data: Path, tmp_path: Path) -> None:
    base = next(p for p in (random.randrange(40000, 50000, 20) for _ in range(50))
                if not any(port_in_use(p + i) for i in range(13)))
    stack = Stack(Settings(home=tmp_path / "stack-home", stack_s3_port=base, stack_mlflow_port=base + 10,
                           stack_prefect_port=base + 11, stack_relay_port=base + 12,
                           stack_name=f"ewtest_{uuid.uuid4().hex[:8]}"))
    home = tmp_path / "home"
    env = {**os.environ, "PREFECT_API_URL": stack.prefect_url, "PREFECT_HOME": str(tmp_path / "prefect-client"),
           "ENGINEWRIGHT_HOME": str(home), "ENGINEWRIGHT_CHECKOUT": str(ROOT)}
    worker = None
    try:
        stack.up(say=lambda line: None, only={"prefect"})
        for pool in ("cpu", "gpu"):
            prefect_cli(["work-pool", "create", pool, "--type", "process"], env)
        prefect_cli(["global-concurrency-limit", "create", "gpu-builds", "--limit", "1"], env)  # one GPU here
        prefect_cli(["--no-prompt", "deploy", "--all"], env)
        log = (tmp_path / "worker-gpu.log").open("w")
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu"], env=env,
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        done = subprocess.run(
            [sys.executable, "-m", "enginewright.cli", "matrix", "--model", str(tiny_model),
             "--quant", "fp8,int8_wo,nvfp4", "--calib", str(shared_data / "calib" / "tiny_shakespeare.txt"),
             "--calib-samples", "4", "--calib-seq-len", "32", "--tasks", "arc_easy", "--limit", "6",
             "--model-name", "svc-matrix", "--spec", str(write_spec(tmp_path / "matrix.yaml")),
             "--submit-to", "build_revision/build", "--gpu-count", "1"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "worker-gpu.log").read_text()[-3000:]

        rows = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
        assert rows["fp8"].split(" | ")[1] == "registered" and rows["int8_wo"].split(" | ")[1] == "registered"
        assert rows["nvfp4"].split(" | ")[1] == "refused" and "compute capability 9.0+" in rows["nvfp4"]

        runs = build_runs(env)  # the build deployment's flow runs: one per variant, with its spec and job variables
        assert len(runs) == 3 and all((r.job_variables or {}).get("gpu_count") == 1 for r in runs)
        import yaml

        assert sorted(yaml.safe_load(r.parameters["spec_yaml"])["quantization"]["format"] for r in runs) == [
            "fp8", "int8_wo", "nvfp4"]
        # All three runs started at once on the worker; their builds (the build_engine subflows, inside the slot) ran
        # one after another: the gpu-builds limit, not the deployment, bounds them.
        spans = sorted((r.start_time, r.end_time) for r in flow_runs_named("build_engine", env))
        assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans

        client = registry_client(Settings(home=home).tracking_uri)
        recommended = client.get_model_version_by_alias("svc-matrix", "recommended")
        assert recommended.tags["quantization.format"] in ("fp8", "int8_wo")
        assert recommended.tags["recommended.reason"].startswith(recommended.tags["quantization.format"])
    finally:
        if worker is not None:
            stop(worker)
        stack.down(purge=True, say=lambda line: None)


def flow_runs_named(name: str, env: dict[str, str]) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
