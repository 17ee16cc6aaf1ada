"""Register a bundle in the MLflow model registry: one run with its evidence, one model version per build key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task

from enginewright.caching import keyed_by, retry_unless_input_error
from enginewright.errors import RegistryError

EXPERIMENT = "enginewright-builds"
BUNDLE_ARTIFACT_PATH = "bundle"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str  # MLflow returns ints from some stores and strings from others; always a string here
    run_id: str
    source: str  # artifact URI of the bundle
    created: bool  # False when a version with this build key already existed


@dataclass(frozen=True)
class RegistrationRequest:
    model_name: str
    build_key: str
    bundle_dir: Path
    evidence_files: list[Path]  # per-sample eval records and other files kept with the run (not the bundle)
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]  # lineage, on the run and on the version
    description: str  # the model card


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


def register_bundle(request: RegistrationRequest, tracking_uri: str, artifact_root: str) -> RegisteredVersion:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    existing = find_version(client, request.model_name, request.build_key)
    if existing is not None:
        return RegisteredVersion(request.model_name, str(existing.version), existing.run_id, existing.source, created=False)

    run = client.create_run(experiment_id(client, artifact_root), run_name=f"build-{request.build_key[:12]}",
                            tags={**request.tags, "mlflow.note.content": request.description})
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in sorted(request.metrics.items())],
            params=[Param(k, v) for k, v in sorted(request.params.items())],
        )
        client.log_artifacts(run_id, str(request.bundle_dir), BUNDLE_ARTIFACT_PATH)
        for path in request.evidence_files:
            client.log_artifact(run_id, str(path), "evaluation")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")

    try:
        client.create_registered_model(request.model_name, tags={"managed_by": "enginewright"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"cannot create registered model {request.model_name!r}: {exc.message}") from None
    source = f"{run.info.artifact_uri.rstrip('/')}/{BUNDLE_ARTIFACT_PATH}"
    version = client.create_model_version(
        request.model_name, source=source, run_id=run_id, tags=request.tags, description=request.description
    )
    return RegisteredVersion(request.model_name, str(version.version), run_id, source, created=True)


@task(name="register", cache_key_fn=keyed_by("register"), persist_result=True,
      retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_input_error)
def register_task(
    cache_key: str, request: RegistrationRequest, tracking_uri: str, artifact_root: str
) -> RegisteredVersion:
    return register_bundle(request, tracking_uri, artifact_root)
