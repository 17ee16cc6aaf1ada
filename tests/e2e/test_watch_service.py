"""The always-on service for real: a Prefect server on PostgreSQL (`enginewright stack`), the deployments of
prefect.yaml, process workers for the `cpu` and `gpu` pools, and a local HTTP stand-in for the Hub's
model-info endpoint (the Hub cannot be reached from here). A new sha becomes exactly one build run with that
revision; the same sha again and an unreachable Hub make none. Workers are stopped with two SIGTERMs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from enginewright.settings import Settings
from enginewright.stack import Stack, port_in_use
from tests.test_watch import HubStandIn

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def prefect_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def build_runs(env: dict[str, str]) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        (deployment,) = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["build"])))
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id={"any_": [deployment.id]}))


def run_watch_tick(env: dict[str, str]) -> None:
    """Start the watcher deployment now (through the cpu worker) and wait until its run is final."""
    out = prefect_cli(["deployment", "run", "watch_checkpoints/watch", "--watch", "--watch-timeout", "120"], env)
    assert "Completed" in out, out


def stop(process: subprocess.Popen) -> None:
    for _ in range(2):  # a Prefect worker ignores the first SIGTERM
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)


def test_a_new_hub_sha_starts_exactly_one_build_run_with_that_revision(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub = HubStandIn()
    base = next(p for p in (random.randrange(30000, 40000, 20) for _ in range(50))
                if not any(port_in_use(p + i) for i in range(13)))
    settings = Settings(home=tmp_path / "stack-home", stack_s3_port=base, stack_mlflow_port=base + 10,
                        stack_prefect_port=base + 11, stack_relay_port=base + 12, stack_name=f"ewtest_{uuid.uuid4().hex[:8]}")
    stack = Stack(settings)
    home = tmp_path / "home"
    spec = tmp_path / "spec.yaml"
    spec.write_text("quantization: {format: fp8}\nregistry: {model_name: watched}\n")
    env = {**os.environ, "PREFECT_API_URL": stack.prefect_url, "PREFECT_HOME": str(tmp_path / "prefect-client"),
           "ENGINEWRIGHT_HOME": str(home), "ENGINEWRIGHT_CHECKOUT": str(ROOT),
           "ENGINEWRIGHT_HUB_ENDPOINT": hub.url, "ENGINEWRIGHT_WATCH_TIMEOUT_S": "2",
           # The watcher polls the stand-in; a build run started here fails fast at the stand-in, not the Hub.
           "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}
    workers: list[subprocess.Popen] = []
    try:
        stack.up(say=lambda line: None, only={"prefect"})
        for pool in ("cpu", "gpu"):
            prefect_cli(["work-pool", "create", pool, "--type", "process"], env)
        prefect_cli(["global-concurrency-limit", "create", "gpu-builds", "--limit", "1"], env)  # one GPU here
        prefect_cli(["--no-prompt", "deploy", "--all"], env)
        for pool in ("cpu", "gpu"):
            log = (tmp_path / f"worker-{pool}.log").open("w")
            workers.append(subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        subprocess.run([sys.executable, "-m", "enginewright.cli", "watch", "add", "org/model", "--spec", str(spec)],
                       env=env, check=True, capture_output=True)

        hub.sha = "1" * 40
        tick_started = time.monotonic()
        run_watch_tick(env)
        deadline = time.monotonic() + 120
        while not (runs := build_runs(env)) and time.monotonic() < deadline:
            time.sleep(1)
        created_after = time.monotonic() - tick_started
        assert len(runs) == 1, runs
        from tasks.revisions import watched_spec_yaml

        assert runs[0].parameters == {"spec_yaml": watched_spec_yaml(spec), "source": "org/model", "revision": "1" * 40}
        while runs[0].start_time is None and time.monotonic() < deadline:
            time.sleep(1)
            runs = build_runs(env)
        assert runs[0].start_time is not None, "the gpu worker never started the build run"
        print(f"\nnew sha → build run created {created_after:.1f} s after the watcher tick started")

        run_watch_tick(env)  # the same sha: no second build
        for failure in ("404", "500", "slow"):
            hub.mode, hub.sha = failure, "2" * 40
            run_watch_tick(env)  # logged in the watcher's run, nothing claimed
        time.sleep(15)  # longer than an event takes to become a run (about 1-3 s here)
        assert len(build_runs(env)) == 1
    finally:
        for worker in workers:
            stop(worker)
        assert all(worker.poll() is not None for worker in workers)
        stack.down(purge=True, say=lambda line: None)
        hub.server.shutdown()
