"""Record a build in MLflow: a run with all its evidence, then (unless the gate failed) one model version per
build key, with lineage tags, the model card as description, and alias `candidate` when the gate passed.

A build whose gate failed keeps its run (tag `gate.verdict=fail`, report and plot attached) and registers
**no** version, so nothing on the serving side can pick it up by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task

from enginewright.caching import keyed_by, retry_unless_input_error
from enginewright.errors import RegistryError

EXPERIMENT = "enginewright-builds"
BUNDLE_ARTIFACT_PATH = "bundle"
CANDIDATE_ALIAS = "candidate"


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    bundle_uri: str  # artifact URI of the bundle


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str  # MLflow returns ints from some stores and strings from others; always a string here
    run_id: str
    source: str  # artifact URI of the bundle
    created: bool  # False when a version with this build key already existed
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunRecord:
    model_name: str
    build_key: str
    bundle_dir: Path
    evidence: dict[str, list[Path]]  # artifact folder -> files kept with the run (eval records, gate report, plot)
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]  # lineage and gate verdicts, on the run and on the version
    description: str  # the model card


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def find_version(client: MlflowClient, name: str, build_key: str):
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.build_key = '{build_key}'")
    except MlflowException:
        return None
    return found[0] if found else None


def experiment_id(client: MlflowClient, artifact_root: str) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=f"{artifact_root.rstrip('/')}/{EXPERIMENT}")


def log_build_run(record: RunRecord, tracking_uri: str, artifact_root: str) -> LoggedRun:
    client = client_for(tracking_uri)
    existing = find_version(client, record.model_name, record.build_key)
    if existing is not None:
        return LoggedRun(existing.run_id, existing.source)
    run = client.create_run(experiment_id(client, artifact_root), run_name=f"build-{record.build_key[:12]}",
                            tags={**record.tags, "mlflow.note.content": record.description})
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in sorted(record.metrics.items())],
            params=[Param(k, v) for k, v in sorted(record.params.items())],
        )
        client.log_artifacts(run_id, str(record.bundle_dir), BUNDLE_ARTIFACT_PATH)
        for folder, paths in record.evidence.items():
            for path in paths:
                client.log_artifact(run_id, str(path), folder)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return LoggedRun(run_id, f"{run.info.artifact_uri.rstrip('/')}/{BUNDLE_ARTIFACT_PATH}")


def register_version(record: RunRecord, run: LoggedRun, gate_passed: bool, tracking_uri: str) -> RegisteredVersion:
    client = client_for(tracking_uri)
    existing = find_version(client, record.model_name, record.build_key)
    if existing is not None:
        return RegisteredVersion(record.model_name, str(existing.version), existing.run_id, existing.source,
                                 created=False, aliases=list(existing.aliases or []))
    try:
        client.create_registered_model(record.model_name, tags={"managed_by": "enginewright"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"cannot create registered model {record.model_name!r}: {exc.message}") from None
    version = client.create_model_version(record.model_name, source=run.bundle_uri, run_id=run.run_id,
                                          tags=record.tags, description=record.description)
    aliases = []
    if gate_passed:
        client.set_registered_model_alias(record.model_name, CANDIDATE_ALIAS, version.version)
        aliases.append(CANDIDATE_ALIAS)
    return RegisteredVersion(record.model_name, str(version.version), run.run_id, run.bundle_uri, created=True,
                             aliases=aliases)


@task(name="log-run", cache_key_fn=keyed_by("log-run"), persist_result=True,
      retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_input_error)
def log_run_task(cache_key: str, record: RunRecord, tracking_uri: str, artifact_root: str) -> LoggedRun:
    return log_build_run(record, tracking_uri, artifact_root)


@task(name="register", cache_key_fn=keyed_by("register"), persist_result=True,
      retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_input_error)
def register_task(
    cache_key: str, record: RunRecord, run: LoggedRun, gate_passed: bool, tracking_uri: str
) -> RegisteredVersion:
    return register_version(record, run, gate_passed, tracking_uri)
