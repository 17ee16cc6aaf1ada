"""Faults during a real build (`enginewright build` in its own process, tiny Llama): the process killed mid-flow
and the work directory's disk full (embedded MLflow store), PostgreSQL restarted mid-flow (production mode: the
stack's Prefect server, MLflow server and S3, both servers on the machine's PostgreSQL). (Two builds of one key at once: the race is at registration,
tested with concurrent processes against the MLflow server in test_registry_stack.py.) The builds report to the
session stack's Prefect server, as workers do (and so skip starting a temporary API each)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enginewright.registry.registry_client import registry_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def spec(tmp_path: Path, tiny_model: Path, shared_data: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"source: {{model: {tiny_model}}}\n"
                    f"calibration: {{source: {shared_data / 'calib' / 'tiny_shakespeare.txt'}, num_samples: 4, "
                    "seq_len: 32}\nevaluation: {tasks: [arc_easy], limit: 2}\n"
                    "gate: {max_drop_points: 100, smoke: false}\nregistry: {model_name: fault-model}\n")
    return path


@pytest.fixture
def prefect_api(stack) -> dict[str, str]:
    return {"PREFECT_API_URL": stack.prefect_url}


def build(home: Path, spec: Path, log: Path, prefect_api: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **prefect_api, "ENGINEWRIGHT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "enginewright.cli.main", "build", "--spec", str(spec)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def step_lines(terminal: str, message: str) -> list[str]:
    """The terminal's step lines (enginewright/ops/console.py) whose message is exactly `message`."""
    return [line for line in terminal.splitlines() if re.match(rf"^\d\d:\d\d:\d\d  \S+ +{re.escape(message)}$", line)]


def build_logs(home: Path) -> str:
    """The builds' log files (Prefect's records, tracebacks, the libraries' output), for a failure's message."""
    return "".join(p.read_text() for p in sorted((home / "logs").glob("*.log")))[-4000:]


def versions(home: Path) -> list:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return registry_client(uri).search_model_versions("name = 'fault-model'")


def wait_for_results(process: subprocess.Popen, results: Path, count: int, log: Path) -> None:
    """Until `count` task results are persisted (resolve, calibration, quantize, ...): the flow is mid-way."""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if results.is_dir() and len(list(results.iterdir())) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the build ended or stalled before {count} results: " + log.read_text()[-3000:])


def test_a_build_killed_mid_flow_resumes_from_its_cached_steps(tmp_path: Path, spec: Path, prefect_api) -> None:
    home = tmp_path / "home"
    results = home / "prefect-results"
    first = build(home, spec, tmp_path / "first.log", prefect_api)
    wait_for_results(first, results, 5, tmp_path / "first.log")
    os.killpg(first.pid, signal.SIGKILL)  # as an OOM kill or a lost worker would
    first.wait()
    done_before_kill = len(list(results.iterdir()))
    assert versions(home) == [] if (home / "mlflow.db").exists() else True

    second = build(home, spec, tmp_path / "second.log", prefect_api)
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert len(step_lines(log, "cached")) >= done_before_kill - 1, log[-3000:]  # the kill may cut one write
    assert [str(v.version) for v in versions(home)] == ["1"]


def test_two_identical_builds_at_once_both_succeed_register_once_and_leave_a_good_cache(
        tmp_path: Path, spec: Path, prefect_api) -> None:
    """A manual build while the deployment runs the same spec: before, both failed (one with a raw
    FileNotFoundError, one with "quantized state … changed") and every rerun failed until the work dir was
    deleted by hand. Now the second waits for the first's lock on the build key and finds its steps cached."""
    home = tmp_path / "home"
    first = build(home, spec, tmp_path / "first.log", prefect_api)
    second = build(home, spec, tmp_path / "second.log", prefect_api)
    for process, log in ((first, tmp_path / "first.log"), (second, tmp_path / "second.log")):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert "is running here; waiting for it to finish" in logs, logs[-3000:]
    assert [str(v.version) for v in versions(home)] == ["1"]
    assert not [p for p in (home / "builds").rglob("*") if ".partial" in p.name]

    third = build(home, spec, tmp_path / "third.log", prefect_api)
    assert third.wait(timeout=600) == 0, (tmp_path / "third.log").read_text()[-3000:]
    third_log = (tmp_path / "third.log").read_text()
    assert step_lines(third_log, "done") == [line for line in third_log.splitlines() if "build_engine" in line
                                             and line.endswith(" done")], third_log[-3000:]  # every task cached
    assert len(step_lines(third_log, "done")) == 1, third_log[-3000:]
    assert "model version: fault-model v1" in third_log and "already registered" in third_log, third_log[-2000:]


def test_a_full_disk_is_one_clear_error_and_leaves_no_partial_file(tmp_path: Path, spec: Path, prefect_api) -> None:
    home = tmp_path / "home"
    builds = home / "builds"
    builds.mkdir(parents=True)
    # A 6 MB file system for the work directory: the tiny model's quantized state does not fit. Mounting needs
    # root, which this machine and CI have.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(builds)], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"cannot mount a small tmpfs here: {mounted.stderr}"
    try:
        process = build(home, spec, tmp_path / "full.log", prefect_api)
        assert process.wait(timeout=600) == 1
        log = (tmp_path / "full.log").read_text()
        error = [line for line in log.splitlines() if line.startswith("enginewright: error:")]
        assert len(error) == 1 and f"the work directory {builds} ran out of space" in error[0], log[-3000:]
        # The terminal has the one line and no traceback (Prefect's tracebacks were printed above it before); the
        # build's log file keeps them.
        assert "Traceback" not in log, log[-3000:]
        assert "Traceback" in build_logs(home) and f"full log: {home / 'logs'}" in log
        leftovers = [p for p in builds.rglob("*") if ".partial" in p.name]
        assert leftovers == []
        assert not (home / "mlflow.db").exists() or versions(home) == []
    finally:
        subprocess.run(["umount", str(builds)], check=True)


def test_postgresql_restarted_mid_flow_the_production_build_completes_and_registers_once(
        tmp_path: Path, spec: Path, stack) -> None:
    """The machine's PostgreSQL (the Prefect server's and the MLflow server's store) restarts while a production
    build runs: the servers answer 503 or drop connections for a moment, the clients retry, the run completes."""
    home, log = tmp_path / "home", tmp_path / "build.log"
    env = stack.client_env()
    process = build(home, spec, log, env)
    wait_for_results(process, home / "prefect-results", 3, log)
    cluster = sorted(os.listdir("/etc/postgresql"))[-1]
    restart = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"],
                             capture_output=True, text=True)
    assert restart.returncode == 0, restart.stderr
    assert process.poll() is None, "the build ended before PostgreSQL had restarted: " + log.read_text()[-3000:]
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    summary = [line for line in text.splitlines() if line.startswith("model version:")]
    assert [line for line in step_lines(text, "done") if "build_engine" in line] and summary == [
        "model version: fault-model v1 @candidate — registered by this run"], text[-3000:]
    versions = registry_client(env["ENGINEWRIGHT_MLFLOW_TRACKING_URI"]).search_model_versions("name = 'fault-model'")
    assert len(versions) == 1 and versions[0].source.startswith("s3://"), versions
