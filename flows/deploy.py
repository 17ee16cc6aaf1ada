"""`deploy_version`: one registered version → a verified bundle and a rendered serving configuration on a target.

What the `deploy` deployment's trigger runs when an alias (`production`) is set in the MLflow UI
(enginewright.promotion), what `enginewright deploy` runs by hand and what `enginewright rollback` re-runs:

1. resolve the version; when started for an alias that has since moved on, stop (the newer change deploys);
2. pull the bundle next to the serving configs and verify it against its manifest (already there: re-verify);
3. check it fits the target (enginewright.fit_check: gate passed, quantization vs compute capability,
   legacy engine vs GPU architecture and TensorRT version);
4. render the release (trtllm-serve command + LLM-API YAML, Triton LLM-API model repository) and switch
   `<serving>/<target>/<model>/current` to it in one rename;
5. record the rollout on the version (`deploy.<target>.*` tags), mark the version it replaced `superseded`, and
   append to the registered model's `deploy.<target>.history`.

A refused deploy (verification failed, does not fit, gate not passed) leaves `current` as it was, tags the
version `deploy.<target>.status=refused` with the reason, adds a `refused` history entry and fails the run
with the same reason. A store that cannot be read (down, wrong credentials: `StoreError`) fails the run too,
but refuses nothing: the version is fine and a rerun may deploy it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from enginewright.bundle_store import fetch_bundle
from enginewright.errors import DeployRefused, EnginewrightError, InputError, StoreError
from enginewright.fit_check import fit_problems
from enginewright.manifest import verify_bundle
from enginewright.promotion import AliasStore
from enginewright.registry_client import registry_client
from enginewright.retries import retry_unless_input_error
from enginewright.schemas import Manifest
from enginewright.serving_config import (
    current_release,
    model_dir,
    read_deployment,
    render_release,
    switch_current,
)
from enginewright.settings import Settings
from enginewright.targets import DeployTarget, load_target

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


@task(name="pull-and-verify", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_input_error)
def pull_and_verify(source: str, bundle_dir: Path, settings: Settings) -> Manifest:
    """The bundle at `bundle_dir`, verified; downloaded first when it is not there yet."""
    if bundle_dir.is_dir():
        return verify_bundle(bundle_dir)
    return fetch_bundle(source, bundle_dir, settings.s3_endpoint_url, settings.transfer, settings.tracking_uri)


@task(name="render-serving-config")
def render_task(bundle_dir: Path, manifest: Manifest, target: DeployTarget, name: str, version: str,
                root: Path) -> tuple[Path, dict[str, Any]]:
    now = datetime.now(UTC)
    release = root / "releases" / f"v{version}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    deployment = render_release(bundle_dir, manifest, target, name, version, release, now)
    switch_current(root, release)
    return release, deployment


def _flow_run_name() -> str:
    p = runtime.flow_run.parameters
    return f"deploy-{p['model_name']}-v{p.get('version') or '@' + str(p.get('alias'))}"


@flow(name="deploy_version", flow_run_name=_flow_run_name)
def deploy_version(model_name: str, version: str | None = None, alias: str | None = None,
                   target_path: str | None = None, action: str = "promote") -> DeployOutcome:
    """Deploy `version` of `model_name` (or the version `alias` points at) to the target in `target_path`."""
    settings = Settings()
    logger = get_run_logger()
    target = load_target(Path(target_path) if target_path else settings.deploy_target)
    client = registry_client(settings.tracking_uri)
    found = resolve_version(client, model_name, version, alias)
    if version is not None and str(found.version) != str(version):
        message = (f"{model_name}@{alias} now points at version {found.version}, not {version}; the newer change "
                   "deploys itself")
        logger.info(message)
        return DeployOutcome("skipped", model_name, str(version), target.name, None, message)
    version = str(found.version)
    prefix = tag_prefix(target)
    root = model_dir(settings.serving_dir, target, model_name)
    live = current_release(root)
    if live is not None and (live_deployment := read_deployment(live))["version"] == version:
        message = f"{model_name} version {version} is already serving on {target.name} ({live})"
        logger.info(message)
        return DeployOutcome("already-deployed", model_name, version, target.name, str(live), message)

    now = datetime.now(UTC).isoformat(timespec="seconds")
    bundle_dir = root / "bundles" / f"v{version}"
    try:
        try:
            manifest = pull_and_verify(found.source, bundle_dir, settings)
        except StoreError:  # the store is down or refuses: the run fails, the version is not refused
            shutil.rmtree(bundle_dir, ignore_errors=True)
            raise
        except EnginewrightError as exc:
            shutil.rmtree(bundle_dir, ignore_errors=True)
            raise DeployRefused(f"bundle verification failed: {exc}") from None
        problems = fit_problems(manifest, found.tags or {}, target)
        if problems:
            raise DeployRefused("; ".join(problems))
    except DeployRefused as refused:
        reason = str(refused)
        for key, value in {"status": "refused", "reason": reason[:4000], "time": now,
                           "run": str(runtime.flow_run.id)}.items():
            client.set_model_version_tag(model_name, version, f"{prefix}.{key}", value)
        append_history(client, model_name, target, {"version": version, "action": action, "status": "refused",
                                                     "time": now})
        logger.error("refused to deploy %s version %s to %s: %s (serving config unchanged: %s)", model_name,
                     version, target.name, reason, live or "none yet")
        if alias is not None and live is not None:
            moved = alias_back_to_serving(client, AliasStore(settings.watch_db_url), model_name, alias, version,
                                          live_deployment["version"])
            if moved:
                logger.warning("%s@%s moved back to version %s, which still serves", model_name, alias,
                               live_deployment["version"])
        raise

    release, deployment = render_task(bundle_dir, manifest, target, model_name, version, root)
    if f"{prefix}.reason" in (found.tags or {}):  # a refusal of an earlier attempt no longer applies
        client.delete_model_version_tag(model_name, version, f"{prefix}.reason")
    for key, value in {"status": "deployed", "time": deployment["rendered_at"], "config": str(release),
                       "gpu": target.gpu, "run": str(runtime.flow_run.id), "action": action}.items():
        client.set_model_version_tag(model_name, version, f"{prefix}.{key}", value)
    if live is not None and live_deployment["version"] != version:
        previous = live_deployment["version"]
        client.set_model_version_tag(model_name, previous, f"{prefix}.status", f"superseded by version {version}")
        client.set_model_version_tag(model_name, previous, f"{prefix}.superseded_at", deployment["rendered_at"])
    append_history(client, model_name, target, {"version": version, "action": action, "status": "deployed",
                                                 "time": deployment["rendered_at"]})
    command = " ".join(deployment["trtllm_serve"])
    create_markdown_artifact(
        key=f"deployment-{target.name}", description=f"{model_name} v{version} on {target.name}",
        markdown=(f"# {model_name} version {version} → {target.name} ({target.gpu})\n\n"
                  f"- release: `{release}` (now `{root / 'current'}`)\n- trtllm-serve: `{command}`\n"
                  f"- Triton model repository: `{release / 'triton'}`\n"))
    message = f"{model_name} version {version} deployed to {target.name}: {release}"
    logger.info(message)
    return DeployOutcome("deployed", model_name, version, target.name, str(release), message)


def alias_back_to_serving(client, store: AliasStore, model_name: str, alias: str, refused: str,
                          serving: str) -> bool:
    """A refused promotion left `alias` on the refused version while the old one serves: move it back. The change
    is claimed first, so the webhook relay and the poll that see it deploy nothing (the version already serves).
    Returns whether the alias moved (a person may have moved it on meanwhile: then it stays)."""
    try:
        current = str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return False
    if current != refused:
        return False
    store.claim(model_name, alias, serving)
    client.set_registered_model_alias(model_name, alias, serving)
    return True


def rollback(model_name: str, settings: Settings, target_path: Path | None = None,
             claim=None) -> DeployOutcome:
    """Move `settings.deploy_alias` back to the version that served before the current one, and deploy it.

    `claim(name, alias, version)` marks the alias change as announced first, so the relay or poller that sees
    the same change does not deploy it a second time.
    """
    target = load_target(target_path or settings.deploy_target)
    client = registry_client(settings.tracking_uri)
    alias = settings.deploy_alias
    try:
        current = str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        raise InputError(f"{model_name}@{alias}: {exc.message}; nothing to roll back") from None
    previous = previous_deployed_version(read_history(client, model_name, target), current)
    if previous is None:
        raise InputError(f"{model_name} has no earlier deployed version on {target.name} to roll back to "
                         f"(history tag {tag_prefix(target)}.history)")
    if claim is not None:
        claim(model_name, alias, previous)
    client.set_registered_model_alias(model_name, alias, previous)
    return deploy_version(model_name, previous, alias, str(target_path or settings.deploy_target), action="rollback")
