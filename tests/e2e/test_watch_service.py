"""The always-on service for real: a Prefect server on PostgreSQL (`enginewright stack`), the deployments of
prefect.yaml, process workers for the `cpu` and `gpu` pools, and a local HTTP stand-in for the Hub's
model-info endpoint (the Hub cannot be reached from here). A new sha becomes exactly one build run with that
revision; the same sha again and an unreachable Hub make none. A matrix in service mode submits its variants to
the same build deployment. Workers are stopped with two SIGTERMs."""

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

from enginewright.config.settings import Settings
from enginewright.stack.servers import Stack, port_in_use
from tests.test_watch import HubStandIn

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def prefect_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def deployment_pools() -> list[str]:
    """The work pools prefect.yaml's deployments name (cpu, gpu, gpu-vllm): each must exist before `deploy --all`."""
    import yaml

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return sorted({d["work_pool"]["name"] for d in config["deployments"]})


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


def stop_worker(process: subprocess.Popen, env: dict[str, str]) -> None:
    """Stop a worker, then mark the flow runs it left Pending or Running as Crashed, as a live worker would have.
    A stopped worker's runs keep their deployment's concurrency slot until its lease expires (minutes): the next
    test's runs of that deployment (the alias poll: `concurrency_limit: 1`, every minute) would wait for it. A
    crashed run gives its slot back (Prefect's ReleaseFlowConcurrencySlots)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    stop(process)
    in_flight = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.PENDING, StateType.RUNNING])))
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=in_flight):
            client.set_flow_run_state(run.id, Crashed(message="its worker was stopped by the test"), force=True)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    """The stack's Prefect server, the `cpu` and `gpu` process pools and their workers, every deployment of
    prefect.yaml, `gpu-builds` at one slot, and the Hub stand-in the watcher polls: (env, home, hub)."""
    import huggingface_hub.constants

    tmp_path = tmp_path_factory.mktemp("service")
    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    hub = HubStandIn()
    base = next(p for p in (random.randrange(30000, 40000, 20) for _ in range(50))
                if not any(port_in_use(p + i) for i in range(13)))
    settings = Settings(home=tmp_path / "stack-home", stack_s3_port=base, stack_mlflow_port=base + 10,
                        stack_prefect_port=base + 11, stack_relay_port=base + 12, stack_name=f"ewtest_{uuid.uuid4().hex[:8]}")
    stack = Stack(settings)
    home = tmp_path / "home"
    env = {**os.environ, "PREFECT_API_URL": stack.prefect_url, "PREFECT_HOME": str(tmp_path / "prefect-client"),
           "ENGINEWRIGHT_HOME": str(home), "ENGINEWRIGHT_CHECKOUT": str(ROOT),
           "ENGINEWRIGHT_HUB_ENDPOINT": hub.url, "ENGINEWRIGHT_WATCH_TIMEOUT_S": "2",
           # The watcher polls the stand-in; a build run started here fails fast at the stand-in, not the Hub.
           "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}
    workers: list[subprocess.Popen] = []
    try:
        stack.up(say=lambda line: None, only={"prefect"})
        for pool in deployment_pools():  # every pool prefect.yaml names, or `deploy --all` refuses
            prefect_cli(["work-pool", "create", pool, "--type", "process"], env)
        prefect_cli(["global-concurrency-limit", "create", "gpu-builds", "--limit", "1"], env)  # one GPU here
        prefect_cli(["--no-prompt", "deploy", "--all"], env)
        for pool in ("cpu", "gpu"):
            log = (tmp_path / f"worker-{pool}.log").open("w")
            workers.append(subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        yield env, home, hub, tmp_path
    finally:
        for worker in workers:
            stop(worker)
        assert all(worker.poll() is not None for worker in workers)
        stack.down(purge=True, say=lambda line: None)
        hub.server.shutdown()
        huggingface_hub.constants.HF_HUB_OFFLINE = offline


def test_a_new_hub_sha_starts_exactly_one_build_run_with_that_revision(service) -> None:
    env, home, hub, tmp_path = service
    spec = tmp_path / "spec.yaml"
    spec.write_text("quantization: {format: fp8}\nregistry: {model_name: watched}\n")
    subprocess.run([sys.executable, "-m", "enginewright.cli.main", "watch", "add", "org/model", "--spec", str(spec)],
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


def test_a_matrix_in_service_mode_submits_each_variant_to_the_build_deployment_one_gpu_slot_at_a_time(
        service, tiny_model: Path, shared_data: Path) -> None:
    """Each variant a flow run of the build deployment on the gpu worker; their builds never overlap (gpu-builds,
    one slot), a refused variant is read from its run's final state, the registered ones from their
    `build-report` artifacts, and one is recommended."""
    import yaml

    from enginewright.registry.registry_client import registry_client
    from tests.e2e.test_matrix import write_spec

    env, home, _hub, tmp_path = service
    done = subprocess.run(
        [sys.executable, "-m", "enginewright.cli.main", "matrix", "--model", str(tiny_model),
         "--quant", "fp8,int8_wo,nvfp4", "--calib", str(shared_data / "calib" / "tiny_shakespeare.txt"),
         "--calib-samples", "4", "--calib-seq-len", "32", "--tasks", "arc_easy", "--limit", "6",
         "--model-name", "svc-matrix", "--spec", str(write_spec(tmp_path / "matrix.yaml")),
         "--submit-to", "build_revision/build", "--gpu-count", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "worker-gpu.log").read_text()[-3000:]

    rows = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert rows["fp8"].split(" | ")[1] == "registered" and rows["int8_wo"].split(" | ")[1] == "registered"
    assert rows["nvfp4"].split(" | ")[1] == "refused" and "compute capability 9.0+" in rows["nvfp4"]

    runs = [r for r in build_runs(env) if r.name.endswith("(matrix)")]  # one build-deployment run per variant
    assert len(runs) == 3 and all((r.job_variables or {}).get("gpu_count") == 1 for r in runs)
    assert sorted(yaml.safe_load(r.parameters["spec_yaml"])["quantization"]["format"] for r in runs) == [
        "fp8", "int8_wo", "nvfp4"]
    # All three started on the worker at once; their builds (build_engine subflows, inside the slot) ran one after
    # another: the gpu-builds limit, not the deployment, bounds them.
    spans = sorted((r.start_time, r.end_time) for r in subflow_runs(runs, "build_engine", env))
    assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans

    client = registry_client(Settings(home=home).tracking_uri)
    recommended = client.get_model_version_by_alias("svc-matrix", "recommended")
    assert recommended.tags["quantization.format"] in ("fp8", "int8_wo")
    assert recommended.tags["recommended.reason"].startswith(recommended.tags["quantization.format"])


def subflow_runs(parents: list, name: str, env: dict[str, str]) -> list:
    """The flow runs named `name` started inside the given runs (a subflow's parent task run is in its parent)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ids = {r.id for r in parents}
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
        return [r for r in runs if r.parent_task_run_id is not None
                and client.read_task_run(r.parent_task_run_id).flow_run_id in ids]
