"""`deploy_version`: one registered version → a verified bundle and a rendered serving configuration on a target.

What the `deploy` deployment's trigger runs when an alias (`production`) is set in the MLflow UI
(enginewright.registry.promotion), what `enginewright deploy` runs by hand and what `enginewright rollback` re-runs:

1. resolve the version; when started for an alias that has since moved on, stop (the newer change deploys);
2. pull the bundle next to the serving configs and verify it against its manifest (already there: re-verify);
3. check it fits the target (enginewright.serving.fit_check: gate passed, quantization vs compute capability,
   legacy engine vs GPU architecture and TensorRT version);
4. render the release (trtllm-serve command + LLM-API YAML, Triton LLM-API model repository) and switch
   `<serving>/<target>/<model>/current` to it in one rename;
5. record the rollout on the version (`deploy.<target>.*` tags), mark the version it replaced `superseded`, and
   append to the registered model's `deploy.<target>.history`;
6. where the target names an `endpoint`: verify the live release (flows/verify.py), which rolls it back by itself
   when it fails (and fails this run with the reasons).

A refused deploy (verification failed, does not fit, gate not passed) leaves `current` as it was, tags the
version `deploy.<target>.status=refused` with the reason, adds a `refused` history entry and fails the run
with the same reason. A store that cannot be read (down, wrong credentials: `StoreError`) fails the run too,
but refuses nothing: the version is fine and a rerun may deploy it.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, runtime

from enginewright.config.settings import Settings
from enginewright.errors import DeployRefused, InputError
from enginewright.ops.process_env import prepare_process
from enginewright.registry.promotion import AliasStore
from enginewright.registry.registry_client import registry_client
from enginewright.serving.serving_config import current_release, model_dir, read_deployment
from enginewright.serving.targets import load_target
from flows.verify import verify_release
from tasks.deploy import (
    DeployOutcome,
    check_bundle_task,
    move_alias_back,
    previous_deployed_version,
    read_history,
    record_refusal_task,
    record_rollout_task,
    render_task,
    resolve_version,
    tag_prefix,
)


def _flow_run_name() -> str:
    p = runtime.flow_run.parameters
    return f"deploy-{p['model_name']}-v{p.get('version') or '@' + str(p.get('alias'))}"


@flow(name="deploy_version", flow_run_name=_flow_run_name)
def deploy_version(model_name: str, version: str | None = None, alias: str | None = None,
                   target_path: str | None = None, action: str = "promote") -> DeployOutcome:
    """Deploy `version` of `model_name` (or the version `alias` points at) to the target in `target_path`."""
    settings = Settings()
    prepare_process(settings)
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
    root = model_dir(settings.serving_dir, target, model_name)
    live = current_release(root)
    serving = read_deployment(live)["version"] if live is not None else None
    if serving == version:
        message = f"{model_name} version {version} is already serving on {target.name} ({live})"
        logger.info(message)
        return DeployOutcome("already-deployed", model_name, version, target.name, str(live), message)

    tags = found.tags or {}
    bundle_dir = root / "bundles" / f"v{version}"
    run_id = str(runtime.flow_run.id)
    try:
        manifest = check_bundle_task(found.source, bundle_dir, tags, target, settings)
    except DeployRefused as refused:
        moved_to = record_refusal_task(settings.tracking_uri, model_name, version, target, action, str(refused),
                                       run_id, alias, serving, settings.watch_db_url)
        logger.error("refused to deploy %s version %s to %s: %s (serving config unchanged: %s)", model_name,
                     version, target.name, refused, live or "none yet")
        if moved_to is not None:
            logger.warning("%s@%s moved back to version %s, which still serves", model_name, alias, moved_to)
        raise

    release, deployment = render_task(bundle_dir, manifest, target, model_name, version, root)
    record_rollout_task(settings.tracking_uri, model_name, version, tags, target, action, release, deployment, root,
                        serving, run_id)
    message = f"{model_name} version {version} deployed to {target.name}: {release}"
    logger.info(message)
    if target.endpoint is not None:  # the switch is done: verify it live, roll back on failure (raises)
        verified = verify_release(model_name, target_path, version, alias)
        message += f"; {verified.message}"
    return DeployOutcome("deployed", model_name, version, target.name, str(release), message)


def rollback(model_name: str, settings: Settings, target_path: Path | None = None) -> DeployOutcome:
    """Move `settings.deploy_alias` back to the version that served before the current one, and deploy it.

    The move is recorded as announced in the alias store (`move_alias_back`), so the relay or poll that sees it
    does not deploy it a second time.
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
    if not move_alias_back(client, AliasStore(settings.watch_db_url), model_name, alias, current, previous):
        raise InputError(f"{model_name}@{alias} moved on from version {current} meanwhile; nothing rolled back")
    return deploy_version(model_name, previous, alias, str(target_path or settings.deploy_target), action="rollback")
