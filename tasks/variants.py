"""The matrix's variants, run one of two ways, and then the comparison's MLflow run and the recommendation's alias.
Plain functions: `flows/matrix.py` only composes them.

- Here (the default): each variant an ordinary `enginewright build` in its own process, at most `parallel` at a time
  on a queue of GPU slots (on the CPU, shares of the cores); its outcome is read from the report its build writes on
  success and on failure, never from its log.
- Service mode (`--submit-to DEPLOYMENT`): each variant a flow run of the build deployment (`run_deployment`), with
  the pool's `gpu_class`/`gpu_count` job variables, so a Kubernetes work pool gives each its own Job and GPUs. All are
  submitted at once; the global concurrency limit `gpu-builds`, which every build run occupies (flows/watch.py),
  bounds how many build at a time. A variant's outcome is its flow run's final state and, when it registered, the
  `build-report` artifact its run published (publish_build_report): both live in the Prefect server, so no file of
  the worker has to reach the matrix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from enginewright.config.schemas import BuildReport, FailedBuildReport
from enginewright.config.spec import BuildSpec, variant_quantization
from enginewright.ops.prefect_server import PARENT_SERVER_IS_TEMPORARY, runs_on_temporary_server
from enginewright.registry.registry_client import registry_client
from tasks.compare import RECOMMENDED_ALIAS, RecommendationPolicy, VariantResult
from tasks.register import experiment_id

MATRIX_EXPERIMENT = "enginewright-matrices"
BUILD_REPORT_ARTIFACT = "build-report"


@dataclass
class _Running:
    fmt: str
    slot: int  # which GPU (or CPU share) it holds until it ends
    process: subprocess.Popen
    report: Path
    log: Path


def variant_spec(spec: BuildSpec, variant: str) -> BuildSpec:
    """The spec of one variant: a format, or auto-<bits> (enginewright.config.spec.variant_quantization)."""
    return spec.model_copy(update={"quantization": variant_quantization(spec.quantization, variant)})


def worker_env(slot: int, parallel: int, api_url: str, temporary_server: bool = False) -> dict[str, str]:
    """Environment of one variant process: the parent's Prefect API (and whether it stops with the parent, so the
    variant prints no link into it), its GPU or its share of the CPU cores."""
    import torch

    env = {**os.environ, "PREFECT_API_URL": api_url}
    if temporary_server:
        env[PARENT_SERVER_IS_TEMPORARY] = "1"
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
            [sys.executable, "-m", "enginewright.cli.main", "build", "--spec", str(spec_file), "--report-json", str(report)],
            stdout=handle, stderr=subprocess.STDOUT,
            env=worker_env(slot, parallel, api_url, runs_on_temporary_server()),
        )
    return _Running(fmt, slot, process, report, log)


def _result(running: _Running) -> VariantResult:
    import json

    code = running.process.returncode
    if running.report.is_file():  # the build writes its report on success and on failure
        report: BuildReport | FailedBuildReport = json.loads(running.report.read_text())
        if report["status"] == "registered":
            return VariantResult(running.fmt, "registered", report=report)
        return VariantResult(running.fmt, report["status"], reason=report["error"][:300])
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


def build_report(outcome) -> BuildReport:
    """A finished build's outcome for programs (flows.build.BuildOutcome): `build --report-json` writes it, a build
    run of the deployment publishes it as its `build-report` artifact; the matrix reads either."""
    reg = outcome.registered
    return {
        "status": "registered", "build_key": outcome.build_key, "model_name": reg.name, "version": reg.version,
        "aliases": reg.aliases, "source": reg.source, "run_id": reg.run_id, "registered_now": outcome.registered_now,
        "version_verdict": outcome.version_verdict, "evaluated_again": outcome.evaluated_again,
        "evaluation_run_id": outcome.evaluation_run_id,
        "bundle_bytes": outcome.bundle_bytes, "gate": outcome.gate, "engine": outcome.engine,
        "effective_bits": outcome.effective_bits, "mix": outcome.mix,
        "candidate_docs_per_second": outcome.candidate.docs_per_second,
        "baseline_seconds": outcome.baseline.seconds,  # 0 when every task came from the baseline store
    }


def write_report(outcome, path: Path) -> None:
    """`build --report-json`: the build's outcome for programs (the matrix's variant processes write it)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_report(outcome), indent=2, default=str))


def failure_report(exc: BaseException) -> FailedBuildReport:
    """A build that registered nothing, classified by its exception's type: GateFailed a gate that failed, bad input
    (exit code 2, e.g. a format this worker cannot calibrate) a refused variant, anything else a failure."""
    from enginewright.errors import EnginewrightError, GateFailed

    code = exc.exit_code if isinstance(exc, EnginewrightError) else 1
    status: Literal["gate failed", "refused", "failed"] = (
        "gate failed" if isinstance(exc, GateFailed) else "refused" if code == 2 else "failed")
    return {"status": status, "exit_code": code,
            "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def write_failure_report(exc: BaseException, path: Path) -> None:
    """`build --report-json` of a build that did not register: its status, exit code and one-line error."""
    import json

    path.write_text(json.dumps(failure_report(exc), indent=2))


def service_job_variables(submit_to: str | None, gpu_class: str | None, gpu_count: int | None) -> dict[str, object]:
    """The job variables of service mode's variant runs, checked before any work: a Prefect server, a deployment
    that exists on it, a GPU class of the table and a GPU count its nodes have."""
    from enginewright.errors import InputError

    if submit_to is None:
        if gpu_class is not None or gpu_count is not None:
            raise InputError("--gpu-class and --gpu-count are job variables of service mode; add --submit-to "
                             "DEPLOYMENT (e.g. build_revision/build)")
        return {}
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from enginewright.ops.gpu_pools import DEFAULT_CLASS, check_gpu_count
    from enginewright.ops.gpu_pools import gpu_class as gpu_class_row
    from enginewright.registry.events import require_prefect_server

    require_prefect_server("matrix --submit-to")
    row = gpu_class_row(gpu_class or DEFAULT_CLASS)
    count = 1 if gpu_count is None else gpu_count
    check_gpu_count(row, count)
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(submit_to)
        except ObjectNotFound:
            raise InputError(f"--submit-to {submit_to!r}: no such deployment on {client.api_url}; give "
                             "<flow name>/<deployment name> (prefect.yaml: build_revision/build), deployed with "
                             "`prefect --no-prompt deploy --all`") from None
    variables: dict[str, object] = {"gpu_count": count}
    if gpu_class is not None:
        variables["gpu_class"] = row.name
    return variables


def publish_build_report(outcome) -> None:
    """The report as a table artifact of the current flow run, one row per field (values JSON-encoded)."""
    publish_report(build_report(outcome))


def publish_failure_report(exc: BaseException) -> None:
    """A failed build's report as the same artifact: the matrix reads why, never Prefect's exception text."""
    publish_report(failure_report(exc))


def publish_report(report: BuildReport | FailedBuildReport) -> None:
    import json

    from prefect.artifacts import create_table_artifact

    create_table_artifact(key=BUILD_REPORT_ARTIFACT, description="The build's outcome (enginewright matrix reads it)",
                          table=[{"field": k, "value": json.dumps(v, default=str)} for k, v in report.items()])


def submit_variants(spec: BuildSpec, formats: list[str], deployment: str, job_variables: dict[str, object],
                    log=print, poll_s: float = 2.0) -> list[VariantResult]:
    """Service mode: one flow run of `deployment` per variant, all submitted now, then waited for; results in
    `formats` order."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    runs = {}
    for fmt in formats:
        spec_yaml = yaml.safe_dump(variant_spec(spec, fmt).model_dump(mode="json"), sort_keys=False)
        # timeout=0: return once created (prefect/deployments/flow_runs.py::run_deployment); a subflow of the matrix
        run: Any = run_deployment(deployment, parameters={"spec_yaml": spec_yaml}, job_variables=job_variables,
                                  timeout=0, flow_run_name=f"{spec.registry.model_name} {fmt} (matrix)")
        runs[fmt] = run  # a FlowRun: called from sync code, run_deployment does not return its coroutine
        log(f"variant {fmt}: submitted to {deployment} as flow run {runs[fmt].id}")
    done: dict[str, VariantResult] = {}
    with get_client(sync_client=True) as client:
        while len(done) < len(runs):
            for fmt, run in runs.items():
                if fmt in done:
                    continue
                current = client.read_flow_run(run.id)
                if current.state is not None and current.state.is_final():
                    done[fmt] = variant_of_run(fmt, current, read_build_report(client, run.id))
                    log(f"variant {fmt}: {done[fmt].status} {done[fmt].reason}".rstrip())
            time.sleep(poll_s)
    return [done[fmt] for fmt in formats]


def read_build_report(client, flow_run_id) -> BuildReport | FailedBuildReport | None:
    import json

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=[BUILD_REPORT_ARTIFACT]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    if not artifacts:
        return None
    rows = json.loads(artifacts[0].data) if isinstance(artifacts[0].data, str) else artifacts[0].data
    report: BuildReport | FailedBuildReport = {row["field"]: json.loads(row["value"]) for row in rows}  # type: ignore[assignment]  # publish_report wrote it
    return report


def variant_of_run(fmt: str, run, report: BuildReport | FailedBuildReport | None) -> VariantResult:
    """A variant's outcome from the build report its flow run published (flows/watch.py::build_revision publishes one
    on success and on failure); a run that ended without one (crashed, cancelled) failed, with its state's words."""
    state = run.state
    if report is not None and report["status"] == "registered" and state.is_completed():
        return VariantResult(fmt, "registered", report=report)
    if report is not None and report["status"] != "registered":
        return VariantResult(fmt, report["status"], reason=f"{report['error'][:300]} (flow run {run.id})")
    message = "completed without a build-report artifact" if state.is_completed() else (
        f"{state.name}: {state.message or 'no report'}")
    return VariantResult(fmt, "failed", reason=f"{message[:300]} (flow run {run.id})")
