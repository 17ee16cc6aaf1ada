"""The deploy state machine's steps, as tasks: check the bundle (pull, verify, fit), record a refusal (tags, history,
alias back to the serving version), render and switch the release, record the rollout (tags, superseded, history,
artifact). `flows/deploy.py` composes them; each is a plain function underneath, testable without a flow run."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from enginewright.bundle.bundle_store import fetch_bundle
from enginewright.bundle.manifest import verify_bundle
from enginewright.config.schemas import Manifest
from enginewright.config.settings import Settings
from enginewright.errors import DeployRefused, EnginewrightError, InputError, StoreError
from enginewright.ops.retries import STEP_RETRIES, STEP_RETRY_DELAY_S, retry_unless_input_error
from enginewright.registry.promotion import AliasStore, alias_now
from enginewright.registry.registry_client import registry_client
from enginewright.serving.fit_check import fit_problems
from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.serving_config import render_release, switch_current
from enginewright.serving.targets import DeployTarget

HISTORY_KEEP = 30  # entries kept in the registered model's history tag (MLflow tag values are at most 5000 chars)


@dataclass(frozen=True)
class DeployOutcome:
    status: str  # deployed | already-deployed | skipped
    model: str
    version: str
    target: str
    release_dir: str | None
    message: str


def tag_prefix(target: DeployTarget) -> str:
    return f"deploy.{target.name}"


def read_history(client, name: str, target: DeployTarget) -> list[dict[str, str]]:
    tags = client.get_registered_model(name).tags or {}
    return json.loads(tags.get(f"{tag_prefix(target)}.history", "[]"))


def append_history(client, name: str, target: DeployTarget, entry: dict[str, str]) -> None:
    history = [*read_history(client, name, target), entry][-HISTORY_KEEP:]
    client.set_registered_model_tag(name, f"{tag_prefix(target)}.history", json.dumps(history, separators=(",", ":")))


def previous_deployed_version(history: list[dict[str, str]], current: str) -> str | None:
    """The version that was serving before `current`: the newest successful deploy of another version."""
    for entry in reversed(history):
        if entry.get("status") == "deployed" and entry.get("version") != current:
            return entry["version"]
    return None


def resolve_version(client, model_name: str, version: str | None, alias: str | None):
    """The version `alias` points at (when given), else `version`; InputError naming what was not found."""
    try:
        if alias is not None:
            return client.get_model_version_by_alias(model_name, alias)
        if version is None:
            raise InputError("deploy needs a version or an alias")
        return client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise InputError(f"{model_name} {'@' + alias if alias else 'version ' + str(version)}: {exc.message}") from None


@task(name="pull-and-verify", retries=STEP_RETRIES, retry_delay_seconds=STEP_RETRY_DELAY_S, retry_condition_fn=retry_unless_input_error)
def pull_and_verify(source: str, bundle_dir: Path, settings: Settings) -> Manifest:
    """The bundle at `bundle_dir`, verified; downloaded first when it is not there yet."""
    if bundle_dir.is_dir():
        return verify_bundle(bundle_dir)
    return fetch_bundle(source, bundle_dir, settings.s3_endpoint_url, settings.transfer, settings.tracking_uri)


@task(name="check-bundle", cache_policy=NO_CACHE)
def check_bundle_task(source: str, bundle_dir: Path, tags: dict[str, str], target: DeployTarget,
                      settings: Settings) -> Manifest:
    """The bundle verified and fitting the target; DeployRefused (with the reason) when it does not, StoreError
    when the store cannot be read (that refuses nothing: a rerun may deploy it)."""
    try:
        manifest = pull_and_verify(source, bundle_dir, settings)
    except StoreError:
        shutil.rmtree(bundle_dir, ignore_errors=True)
        raise
    except EnginewrightError as exc:
        shutil.rmtree(bundle_dir, ignore_errors=True)
        raise DeployRefused(f"bundle verification failed: {exc}") from None
    problems = fit_problems(manifest, tags, target, RUNTIMES[target.runtime].parallelism(bundle_dir, target))
    if problems:
        raise DeployRefused("; ".join(problems))
    return manifest


@task(name="record-refusal", cache_policy=NO_CACHE)
def record_refusal_task(tracking_uri: str, name: str, version: str, target: DeployTarget, action: str, reason: str, run_id: str,
                        alias: str | None, serving: str | None, alias_store_url: str) -> str | None:
    """Tags and history of a refused deploy; a refused promotion's alias moved back to the version that still
    serves. Returns the version the alias moved back to, or None."""
    client = registry_client(tracking_uri)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    prefix = tag_prefix(target)
    for key, value in {"status": "refused", "reason": reason[:4000], "time": now, "run": run_id}.items():
        client.set_model_version_tag(name, version, f"{prefix}.{key}", value)
    append_history(client, name, target, {"version": version, "action": action, "status": "refused", "time": now})
    if alias is not None and serving is not None:
        if move_alias_back(client, AliasStore(alias_store_url), name, alias, version, serving):
            return serving
    return None


@task(name="render-serving-config", cache_policy=NO_CACHE)
def render_task(bundle_dir: Path, manifest: Manifest, target: DeployTarget, name: str, version: str,
                root: Path) -> tuple[Path, dict[str, Any]]:
    now = datetime.now(UTC)
    release = root / "releases" / f"v{version}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    deployment = render_release(bundle_dir, manifest, target, name, version, release, now)
    switch_current(root, release)
    return release, deployment


@task(name="record-rollout", cache_policy=NO_CACHE)
def record_rollout_task(tracking_uri: str, name: str, version: str, tags: dict[str, str], target: DeployTarget, action: str,
                        release: Path, deployment: dict[str, Any], root: Path, previous: str | None,
                        run_id: str) -> None:
    """The version tagged deployed (an earlier refusal's reason dropped), the one it replaced `superseded`, the
    history appended, and a markdown artifact with the serving command."""
    client = registry_client(tracking_uri)
    prefix = tag_prefix(target)
    if f"{prefix}.reason" in tags:  # a refusal of an earlier attempt no longer applies
        client.delete_model_version_tag(name, version, f"{prefix}.reason")
    for key, value in {"status": "deployed", "time": deployment["rendered_at"], "config": str(release),
                       "gpu": target.gpu, "run": run_id, "action": action}.items():
        client.set_model_version_tag(name, version, f"{prefix}.{key}", value)
    if previous is not None and previous != version:
        client.set_model_version_tag(name, previous, f"{prefix}.status", f"superseded by version {version}")
        client.set_model_version_tag(name, previous, f"{prefix}.superseded_at", deployment["rendered_at"])
    append_history(client, name, target, {"version": version, "action": action, "status": "deployed",
                                          "time": deployment["rendered_at"]})
    serving = RUNTIMES[deployment["runtime"]].describe(deployment, release)
    create_markdown_artifact(
        key=f"deployment-{target.name}", description=f"{name} v{version} on {target.name}",
        markdown=(f"# {name} version {version} → {target.name} ({target.gpu})\n\n"
                  f"- release: `{release}` (now `{root / 'current'}`)\n{serving}"))


@dataclass(frozen=True)
class RolledBack:
    failed: str
    restored: str | None  # the version serving again, or None: none served before (current removed)
    release_dir: str | None
    alias_moved: bool


def release_of(client, name: str, version: str, target: DeployTarget) -> Path | None:
    """The release folder a version was last rendered into (its `deploy.<target>.config` tag), if still there."""
    tags = client.get_model_version(name, version).tags or {}
    path = tags.get(f"{tag_prefix(target)}.config")
    return Path(path) if path and (Path(path) / "deployment.json").is_file() else None


@task(name="record-verification", cache_policy=NO_CACHE)
def record_verification_task(tracking_uri: str, name: str, version: str, target: DeployTarget, report: Any,
                             run_id: str) -> None:
    """`deploy.<target>.verification` (verified | failed), its one-line detail and time on the version; a markdown
    artifact with every figure."""
    client = registry_client(tracking_uri)
    prefix = tag_prefix(target)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {"verification": "verified" if report.passed else "failed",
                       "verification_detail": report.summary()[:4000], "verified_at": now,
                       "verification_seconds": json.dumps({k: round(v, 1) for k, v in report.seconds.items()}),
                       "verification_run": run_id}.items():
        client.set_model_version_tag(name, version, f"{prefix}.{key}", value)
    lines = [f"# {name} version {version} on {target.name}: {'verified' if report.passed else 'FAILED'}", "",
             f"- endpoint: `{report.endpoint}`", *[f"- {figure}" for figure in report.figures()],
             *[f"- **failed**: {reason}" for reason in report.reasons], *[f"- not checked: {n}" for n in report.notes]]
    if report.seconds:
        lines += ["", "| check | seconds |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in report.seconds.items()]]
    if report.load is not None:
        lines += ["", "| load test | value |", "|---|---|", *[f"| {k} | {v:.4g} |" for k, v in report.load.items()]]
    create_markdown_artifact(key=f"verification-{target.name}", description=f"{name} v{version} on {target.name}",
                             markdown="\n".join(lines) + "\n")


@task(name="roll-back-release", cache_policy=NO_CACHE)
def roll_back_release_task(tracking_uri: str, name: str, failed: str, target: DeployTarget, root: Path, alias: str,
                           alias_store_url: str, reason: str, run_id: str) -> RolledBack:
    """Undo a switched release that failed verification, without a person and without a second deploy:
    `current` back to the release that served before (removed when none did), the alias back to that version
    (claimed first, so the relay and the poll deploy nothing), both versions tagged, the history appended."""
    client = registry_client(tracking_uri)
    prefix = tag_prefix(target)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    restored = previous_deployed_version(read_history(client, name, target), failed)
    release = release_of(client, name, restored, target) if restored is not None else None
    if release is not None:
        switch_current(root, release)
    else:
        restored = None
        (root / "current").unlink(missing_ok=True)
    moved = move_alias_back(client, AliasStore(alias_store_url), name, alias, failed, restored)
    for key, value in {"status": "rolled back", "reason": reason[:4000], "rolled_back_at": now, "run": run_id}.items():
        client.set_model_version_tag(name, failed, f"{prefix}.{key}", value)
    append_history(client, name, target, {"version": failed, "action": "verify", "status": "rolled-back",
                                          "time": now})
    if restored is not None:
        client.set_model_version_tag(name, restored, f"{prefix}.status", f"deployed (restored: version {failed} "
                                     "failed verification)")
        client.set_model_version_tag(name, restored, f"{prefix}.restored_at", now)
        append_history(client, name, target, {"version": restored, "action": "rollback", "status": "deployed",
                                              "time": now})
    return RolledBack(failed, restored, str(release) if release else None, moved)


def move_alias_back(client, store: AliasStore, name: str, alias: str, off: str, onto: str | None) -> bool:
    """`alias` off version `off` (a refused or rolled-back one) and back onto `onto`, the version that serves. Done
    holding the alias store's lock and recorded there as announced, so the webhook relay and the poll that see the
    move deploy nothing. With no `onto` the alias is removed and its record forgotten, so setting it to the same
    version again later deploys again. Returns whether the alias moved (a person who moved it on meanwhile wins: it
    stays)."""
    with store.holding(name, alias) as held:
        if alias_now(client)(name, alias) != off:
            return False
        if onto is None:
            client.delete_registered_model_alias(name, alias)
            held.forget(off)
        else:
            held.record(onto)
            client.set_registered_model_alias(name, alias, onto)
        return True
