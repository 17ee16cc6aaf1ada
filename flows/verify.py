"""`verify_release`: after a release is switched, check the live endpoint serves it as the build did; roll it back
when it does not.

Run by `deploy_version` right after it switches `current` (when the target names an `endpoint`), and by hand:
`enginewright verify NAME --target FILE`. It verifies the release `current` points at:

1. wait until the endpoint serves it (bounded by the target's `verify.ready_timeout_s`);
2. replay the bundle's golden prompts, ask its evaluation subset, run the load test (tasks/verify.py);
3. tag the version `deploy.<target>.verification` verified | failed with the figures, and publish them as a
   markdown artifact;
4. on failure, roll back (tasks/deploy.py `roll_back_release_task`): `current` and the alias back to the version
   that served before, both tagged, the history appended — then fail the run with the reasons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, runtime

from enginewright.bundle.manifest import MANIFEST_NAME
from enginewright.config.settings import Settings
from enginewright.errors import InputError, VerificationFailed
from enginewright.ops.process_env import prepare_process
from enginewright.serving.golden import read_golden
from enginewright.serving.serving_config import current_release, model_dir, read_deployment
from enginewright.serving.targets import load_target
from tasks.deploy import record_verification_task, roll_back_release_task
from tasks.verify import require_endpoint, verify_release_task


@dataclass(frozen=True)
class VerifyOutcome:
    status: str  # verified | skipped (another release is current now)
    model: str
    version: str
    target: str
    message: str


def _flow_run_name() -> str:
    p = runtime.flow_run.parameters
    return f"verify-{p['model_name']}" + (f"-v{p['version']}" if p.get("version") else "")


@flow(name="verify_release", flow_run_name=_flow_run_name)
def verify_release(model_name: str, target_path: str | None = None, version: str | None = None,
                   alias: str | None = None, roll_back: bool = True) -> VerifyOutcome:
    """Verify the current release of `model_name` on the target (`version`: only if it is still the current one)."""
    settings = Settings()
    prepare_process(settings)
    logger = get_run_logger()
    target = load_target(Path(target_path) if target_path else settings.deploy_target)
    require_endpoint(target)
    root = model_dir(settings.serving_dir, target, model_name)
    live = current_release(root)
    if live is None:
        raise InputError(f"nothing of {model_name} is deployed on {target.name} ({root / 'current'} does not exist)")
    deployment = read_deployment(live)
    if version is not None and str(deployment["version"]) != str(version):
        message = f"version {deployment['version']} is current on {target.name} now, not {version}: not verified"
        logger.info(message)
        return VerifyOutcome("skipped", model_name, str(version), target.name, message)
    bundle_dir = Path(deployment["bundle_dir"])
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    report = verify_release_task(deployment, read_golden(bundle_dir), manifest, target, bundle_dir)
    run_id = str(runtime.flow_run.id)
    record_verification_task(settings.tracking_uri, model_name, report.version, target, report, run_id)
    if report.passed:
        message = f"{model_name} version {report.version} on {target.name} {report.summary()}"
        logger.info(message)
        return VerifyOutcome("verified", model_name, report.version, target.name, message)
    logger.error("%s version %s on %s: %s", model_name, report.version, target.name, report.summary())
    if roll_back:
        rolled = roll_back_release_task(settings.tracking_uri, model_name, report.version, target, root,
                                        alias or settings.deploy_alias, settings.watch_db_url, report.summary(),
                                        run_id)
        after = (f"rolled back to version {rolled.restored} ({rolled.release_dir})" if rolled.restored
                 else "rolled back: no earlier release, nothing serves now")
        raise VerificationFailed(f"{report.summary()}; {after}")
    raise VerificationFailed(f"{report.summary()}; left in place (--no-rollback)")
