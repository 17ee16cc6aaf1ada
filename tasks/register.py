"""Record a build in MLflow: a run with all its evidence, then (unless the gate failed) the bundle stored and
verified (enginewright.bundle.bundle_store), then one model version per build key pointing at it, with lineage tags,
the model card as description, and alias `candidate` when the gate passed.

A build whose gate failed keeps its run (tag `gate.verdict=fail`, report and plot attached) and registers
**no** version, so nothing on the serving side can pick it up by mistake.

One version per build key, also under races: MLflow numbers a registered model's versions in commit order
(max + 1 under a unique constraint, retried on conflict), so after creating its version a process looks at
every version carrying its build key. The lowest number wins; a process that lost deletes its own version and
its bundle copy and returns the winner. A loser's version exists for a few milliseconds and never gets an alias.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from enginewright.bundle.bundle_store import bundle_location, delete_bundle, store_bundle
from enginewright.config.schemas import GateReport, Manifest
from enginewright.config.settings import TransferSettings
from enginewright.errors import GateFailed, InputError, RegistryError
from enginewright.keys.cache_policies import step_policy
from enginewright.ops.retries import STEP_RETRIES, STEP_RETRY_DELAY_S, retry_unless_input_error
from enginewright.registry.registry_client import registry_client

if TYPE_CHECKING:  # mlflow is imported by the functions that talk to it: a fully cached build never does
    from mlflow.tracking import MlflowClient

EXPERIMENT = "enginewright-builds"
CANDIDATE_ALIAS = "candidate"


REEVALUATION_TAG = "enginewright.reevaluation_of"  # on a later evaluation's run: the version it evaluated again
REEVALUATION_APPLIED_TAG = "enginewright.reevaluation_applied"  # "true": the version's verdict follows this run
GATE_RUN_TAG = "gate.run_id"  # on a version: the run whose gate its gate tags are
GATE_PLAN_TAG = "gate.plan"  # the plan and margin a verdict was reached under (tasks.records.gate_plan)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    registered_source: str | None  # the bundle URI of the version already registered for this key, if any
    version: str | None = None  # that version's number
    version_verdict: str | None = None  # the verdict it stands on after this run (its own unless re-judged now)
    applied: bool = False  # this run's gate re-judged the version (`registry.reevaluate`, under the version's plan)

    @property
    def evaluated_again(self) -> bool:
        """A registered key evaluated under other evidence whose verdict left the version as it was."""
        return self.version is not None and not self.applied

    def standing_verdict(self, gate: GateReport) -> str:
        """The verdict the key's version stands on: this run's, unless it only evaluated a registered key again."""
        return self.version_verdict if self.evaluated_again and self.version_verdict else gate["overall"]


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str  # MLflow returns ints from some stores and strings from others; always a string here
    run_id: str
    source: str  # URI of the verified bundle (s3://… or file://…)
    created: bool  # False when a version with this build key already existed
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunRecord:
    model_name: str
    build_key: str
    evidence: dict[str, list[Path]]  # artifact folder -> files kept with the run (eval records, gate report, plot)
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]  # lineage and gate evidence, all on the run; the version gets `headline_tags`
    description: str  # the model card
    reevaluate: bool = False  # registry.reevaluate: re-judge a registered version (under its own plan only)


# What a version carries as tags, so that the verdict stands out in MLflow's versions table: the rest of the
# lineage (source, calibration, tools, per-task gate rows) is on the run, in the manifest and in the model card.
HEADLINE_TAGS = ("build_key", "quantization.format", "quantization.effective_bits", "quantization.auto.budget",
                 "bundle.bytes", "gate.verdict", "gate.digest", "runtime.candidate", "runtime.agreement_low",
                 "engine.status", GATE_PLAN_TAG)
GATE_EVIDENCE_TAGS = ("gate.verdict", "gate.digest")  # a re-evaluation is a run whose evidence differs from these
BUNDLE_MODEL_TYPE = "enginewright-bundle"
BUNDLE_MODEL_TAG = "bundle.model_id"  # on a version: its external LoggedModel


def headline_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: tags[k] for k in HEADLINE_TAGS if k in tags}


def logged_model_name(model_name: str, variant: str) -> str:
    """`<model>-<variant>` without what MLflow refuses in a logged model's name ('/', ':', '.', '%', quotes:
    mlflow/utils/validation.py::_validate_logged_model_name): SmolLM2-1.7B and auto-5.4 have dots."""
    return re.sub(r"[/:.%\"']", "_", f"{model_name}-{variant}")


def run_name(record: RunRecord, reevaluation: bool) -> str:
    """`SmolLM2-135M-Instruct fp8 3fa9c2e1`: model and format first, so fp8 and int4 differ in the runs list."""
    kind = " re-evaluation" if reevaluation else ""
    return f"{record.model_name} {record.tags.get('quantization.format', '?')}{kind} {record.build_key[:8]}"


@contextmanager
def registry_errors(tracking_uri: str, what: str):
    """MLflow's failures (server down, refused request) as one RegistryError line naming the server and the step;
    Prefect retries the task, and a rerun resumes here (the steps before are cached)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        first = str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else type(exc).__name__
        raise RegistryError(f"MLflow at {tracking_uri} failed to {what}: {first}") from None


def versions_with_key(client: MlflowClient, name: str, build_key: str) -> list:
    """Versions of `name` tagged with `build_key`, lowest version number first."""
    found = client.search_model_versions(f"name = '{name}' and tags.build_key = '{build_key}'")
    return sorted(found, key=lambda v: int(v.version))


def find_version(client: MlflowClient, name: str, build_key: str):
    found = versions_with_key(client, name, build_key)
    return found[0] if found else None


def experiment_id(client: MlflowClient, artifact_root: str, name: str = EXPERIMENT) -> str:
    """The experiment `name`, created under `artifact_root` the first time."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=f"{artifact_root.rstrip('/')}/{name}")


def gate_evidence(tags: dict[str, str]) -> dict[str, str]:
    return {k: tags[k] for k in GATE_EVIDENCE_TAGS if k in tags}


def log_build_run(record: RunRecord, tracking_uri: str, artifact_root: str, started_ms: int | None = None) -> LoggedRun:
    """The build's MLflow run. A build key that already has a version logs no second build run, unless this run's
    gate differs from the version's (a new plan, margin or evaluation code): that later evaluation gets its own run,
    linked to the version, and the version's verdict stays as it is. Only an explicit re-evaluation
    (`record.reevaluate`, under the plan the version was judged under: `require_reevaluation_allowed`, before any
    work) moves its gate tags and `candidate` alias (`record_reevaluation`)."""
    from mlflow.entities import Metric, Param

    client = registry_client(tracking_uri)
    existing = find_version(client, record.model_name, record.build_key)
    if existing is not None and gate_evidence(existing.tags or {}) == gate_evidence(record.tags):
        return LoggedRun(existing.run_id, existing.source, str(existing.version),
                         (existing.tags or {}).get("gate.verdict"), applied=True)
    experiment = experiment_id(client, artifact_root)
    if existing is None:
        require_plan_of_failed_runs(client, record, experiment)
    link = {} if existing is None else {REEVALUATION_TAG: str(existing.version),
                                        REEVALUATION_APPLIED_TAG: str(record.reevaluate).lower()}
    run = client.create_run(experiment, start_time=started_ms,
                            run_name=run_name(record, existing is not None),
                            tags={**record.tags, **link, "mlflow.note.content": record.description})
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in sorted(record.metrics.items())],
            params=[Param(k, v) for k, v in sorted(record.params.items())],
        )
        for folder, paths in record.evidence.items():
            for path in paths:
                client.log_artifact(run_id, str(path), folder)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    if existing is None:
        return LoggedRun(run_id, None)
    if record.reevaluate:
        record_reevaluation(client, record, existing, run_id)
        return LoggedRun(run_id, existing.source, str(existing.version), record.tags.get("gate.verdict"), applied=True)
    return LoggedRun(run_id, existing.source, str(existing.version), (existing.tags or {}).get("gate.verdict"))


def require_plan_of_failed_runs(client: MlflowClient, record: RunRecord, experiment: str) -> None:
    """A key whose gate failed under one plan is not registered on a verdict reached under another: a margin widened
    (or a plan changed) after a fail was seen is not covered by the gate's error rates (docs/gate.md). The key's
    failed runs carry their plan (tag gate.plan); runs from before that tag are not held against it."""
    if record.tags.get("gate.verdict") == "fail":
        return
    failed = client.search_runs([experiment], filter_string=f"tags.build_key = '{record.build_key}' and "
                                "tags.`gate.verdict` = 'fail'", max_results=20)
    for run in failed:
        plan = run.data.tags.get(GATE_PLAN_TAG)
        if plan is not None and plan != record.tags.get(GATE_PLAN_TAG):
            raise GateFailed(
                f"build key {record.build_key[:12]} failed its gate under plan {plan!r} (MLflow run "
                f"{run.info.run_id}); a verdict under another plan or margin ({record.tags.get(GATE_PLAN_TAG)!r}) "
                "on the same candidate is not covered by the gate's error rates (docs/gate.md), so nothing is "
                "registered. Keep that plan, or build another candidate (another build key)")


def require_reevaluation_allowed(reevaluate: bool, model_name: str, build_key: str, gate_plan: str,
                                 tracking_uri: str) -> None:
    """Before any work: an explicit re-evaluation may add evidence only under the plan and margin fixed before the
    version's data were seen (its tag gate.plan): a verdict under a plan chosen afterwards is not covered by the
    gate's error rates (docs/gate.md). Asks the registry only when a re-evaluation was asked for."""
    if not reevaluate:
        return
    with registry_errors(tracking_uri, "read the version to re-evaluate"):
        version = find_version(registry_client(tracking_uri), model_name, build_key)
    judged_under = None if version is None else (version.tags or {}).get(GATE_PLAN_TAG)
    if judged_under is not None and judged_under != gate_plan:
        raise InputError(
            f"--reevaluate: v{version.version} of {model_name} was judged under plan {judged_under!r}; this build's "
            f"plan is {gate_plan!r}. A re-evaluation keeps the version's plan and margin (a plan changed after its "
            "data were seen is not covered by the gate's error rates, docs/gate.md); drop --reevaluate to record "
            "this evaluation beside the version")


def record_reevaluation(client: MlflowClient, record: RunRecord, version, run_id: str) -> None:
    """The version's gate tags replaced by the re-evaluation's (with the run that holds its evidence), and the
    `candidate` alias taken from it if it no longer passes. (A pass sets the alias in the register step, as for
    any passing build: `converge_candidate_alias`.)"""
    from mlflow.exceptions import MlflowException

    # per-task rows, too: versions registered before the headline tags had them
    stale = {k for k in version.tags or {} if k.startswith("gate.") and k not in (GATE_RUN_TAG, GATE_PLAN_TAG)}
    for key in stale - gate_evidence(record.tags).keys():
        client.delete_model_version_tag(record.model_name, version.version, key)
    for key, value in {**gate_evidence(record.tags), GATE_RUN_TAG: run_id}.items():
        client.set_model_version_tag(record.model_name, version.version, key, value)
    if record.tags.get("gate.verdict") != "pass":
        try:  # search results carry no aliases: ask who holds it
            holder = client.get_model_version_by_alias(record.model_name, CANDIDATE_ALIAS)
        except MlflowException:
            return
        if str(holder.version) == str(version.version):
            client.delete_registered_model_alias(record.model_name, CANDIDATE_ALIAS)


def _existing(version, created: bool = False) -> RegisteredVersion:
    return RegisteredVersion(version.name, str(version.version), version.run_id, version.source, created=created,
                             aliases=list(version.aliases or []))


def converge_candidate_alias(client: MlflowClient, model_name: str, version) -> None:
    """A rerun sets what the gate earned: a version whose build passed gets `candidate` if no newer version
    holds it. (A build killed between creating its version and setting the alias, or an alias call that failed
    after its retries, left a passing version without it; reruns then found the version and stopped.)"""
    from mlflow.exceptions import MlflowException

    try:
        holder = client.get_model_version_by_alias(model_name, CANDIDATE_ALIAS)
    except MlflowException:
        holder = None
    if holder is None or int(holder.version) < int(version.version):
        client.set_registered_model_alias(model_name, CANDIDATE_ALIAS, version.version)


def link_bundle_model(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """The LoggedModel → version link as `mlflow.register_model` writes it (tag `mlflow.modelVersions`, mlflow
    3.17.2 mlflow/tracking/_model_registry/fluent.py _register_model). The version's own `model_id` field is set
    only for a `models:/<id>` source (the SQL store persists no model_id), and a version's source here must stay
    the bundle URI that pull and deploy read; its tag `bundle.model_id` points the other way."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": name, "version": version}])})


def external_bundle_model(client: MlflowClient, record: RunRecord, run_id: str, bundle_uri: str) -> str:
    """The bundle recorded the way MLflow 3 records a model stored outside it: a READY LoggedModel flagged
    external, with an MLmodel file that points nowhere inside MLflow. This is `mlflow.create_external_model`
    (mlflow 3.17.2, mlflow/tracking/fluent.py) step by step on our client, because the fluent call uses the
    process-wide tracking URI. Returns its model id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models.utils import get_external_mlflow_model_spec
    from mlflow.utils.file_utils import TempDir
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

    experiment = client.get_run(run_id).info.experiment_id
    model = client.create_logged_model(
        experiment, name=logged_model_name(record.model_name, record.tags.get("quantization.format", "bundle")),
        source_run_id=run_id, model_type=BUNDLE_MODEL_TYPE,
        tags={MLFLOW_MODEL_IS_EXTERNAL: "true", "bundle.uri": bundle_uri, **headline_tags(record.tags)})
    with TempDir() as tmp:
        get_external_mlflow_model_spec(model).save(tmp.path("MLmodel"))
        client.log_model_artifacts(model.model_id, tmp.path())
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    # The run's output, as `mlflow.log_outputs` records it: the run page then lists it under "Logged models" (it
    # said "Logged models —" with the model in the experiment).
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def version_description(card: str, experiment_id: str, run_id: str, bundle_uri: str) -> str:
    """The model card with the evidence a click away (it was three clicks down the run's artifacts): the gate plot,
    the build's run, the bundle's full URI (its tag is cut off in the version's tag list). Links are relative to the
    MLflow UI, which renders a version's description as Markdown and serves a run's artifacts at
    `get-artifact?path=…&run_uuid=…` (the route its own artifact viewer uses)."""
    plot = f"get-artifact?path=gate%2Fgate_plot.png&run_uuid={run_id}"
    return (f"**Evidence:** [accuracy gate plot]({plot}) · [the build's run](#/experiments/{experiment_id}/runs/"
            f"{run_id}) · bundle `{bundle_uri}`\n\n{card}")


def register_version(record: RunRecord, run_id: str, bundle_uri: str, gate_passed: bool, tracking_uri: str,
                     discard_bundle: Callable[[str], None] = lambda uri: None) -> RegisteredVersion:
    """Create the version for `record.build_key` pointing at the verified `bundle_uri`, unless one exists.

    `discard_bundle` deletes this process's bundle copy when another process registered the key first.
    """
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    existing = find_version(client, record.model_name, record.build_key)
    if existing is not None:
        if existing.source != bundle_uri:
            discard_bundle(bundle_uri)
        if gate_passed:
            converge_candidate_alias(client, record.model_name, existing)
            existing = client.get_model_version(record.model_name, existing.version)
        return _existing(existing)
    try:
        client.create_registered_model(record.model_name, tags={"managed_by": "enginewright"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"cannot create registered model {record.model_name!r}: {exc.message}") from None
    bundle_model = external_bundle_model(client, record, run_id, bundle_uri)
    description = version_description(record.description, client.get_run(run_id).info.experiment_id, run_id,
                                      bundle_uri)
    mine = client.create_model_version(record.model_name, source=bundle_uri, run_id=run_id,
                                       tags={**headline_tags(record.tags), "bundle.uri": bundle_uri,
                                             BUNDLE_MODEL_TAG: bundle_model},
                                       description=description)
    winner = find_version(client, record.model_name, record.build_key)
    if winner is None:
        raise RegistryError(f"version {mine.version} of {record.model_name!r} vanished right after it was created")
    if str(winner.version) != str(mine.version):
        client.delete_model_version(record.model_name, mine.version)
        client.delete_logged_model(bundle_model)
        discard_bundle(bundle_uri)
        return _existing(winner)
    link_bundle_model(client, bundle_model, record.model_name, str(mine.version))
    aliases = []
    if gate_passed:
        client.set_registered_model_alias(record.model_name, CANDIDATE_ALIAS, mine.version)
        aliases.append(CANDIDATE_ALIAS)
    return RegisteredVersion(record.model_name, str(mine.version), run_id, bundle_uri, created=True, aliases=aliases)


@task(name="log-run", cache_policy=step_policy("log-run", "record", "tracking_uri", "artifact_root"),
      persist_result=True, retries=STEP_RETRIES, retry_delay_seconds=STEP_RETRY_DELAY_S,
      retry_condition_fn=retry_unless_input_error)
def log_run_task(record: RunRecord, tracking_uri: str, artifact_root: str, started_ms: int | None = None) -> LoggedRun:
    with registry_errors(tracking_uri, "log the build run"):
        return log_build_run(record, tracking_uri, artifact_root, started_ms)


@task(name="store-bundle", cache_policy=step_policy("store-bundle", "manifest", "run", "bundle_root", "endpoint_url"),
      persist_result=True, retries=STEP_RETRIES, retry_delay_seconds=STEP_RETRY_DELAY_S, retry_condition_fn=retry_unless_input_error)
def store_bundle_task(bundle_dir: Path, manifest: Manifest, run: LoggedRun, bundle_root: str, endpoint_url: str | None,
                      transfer: TransferSettings) -> str:
    """Upload (S3: parallel multipart, direct) or copy the bundle and verify every stored file; returns its URI.
    A build key that already has a version keeps that version's bundle: nothing is stored twice."""
    if run.registered_source is not None:
        return run.registered_source
    uri = bundle_location(bundle_root, manifest["bundle_id"], run.run_id)
    return store_bundle(bundle_dir, manifest, uri, endpoint_url, transfer)


def require_gate_passed(gate: GateReport, run: LoggedRun, plan: str) -> None:
    """A failed gate ends the build here: its evidence is in the run, and no bundle is stored or registered.
    `plan`: the verdict's plan (tag gate.plan)."""
    if gate["overall"] == "fail":
        where = ("no version registered" if run.version is None else evaluated_again_note(run, gate, plan)
                 or f"v{run.version}'s gate tags now say so and it lost `candidate`")
        raise GateFailed(f"{gate['message']} (evidence kept in MLflow run {run.run_id}; {where})")


def evaluated_again_note(run: LoggedRun, gate: GateReport, plan: str) -> str | None:
    """What a build of an already registered key says about the version it evaluated again (None: it did not);
    `plan` is this build's (tag gate.plan), the one `--reevaluate` compares with the version's."""
    if not run.evaluated_again:
        return None
    return (f"already registered as v{run.version}; evaluated again under plan {plan}: verdict "
            f"{gate['overall']} (the version's verdict, {run.version_verdict or 'unrecorded'}, is unchanged; "
            "`build --reevaluate` under its own plan re-judges it)")


def version_passes(gate: GateReport, run: LoggedRun) -> bool:
    """Whether the key's version earns `candidate`: on its standing verdict (a later evaluation that was not an
    explicit re-evaluation moves no alias)."""
    return run.standing_verdict(gate) == "pass"


@task(name="register", persist_result=True, retries=STEP_RETRIES, retry_delay_seconds=STEP_RETRY_DELAY_S,
      retry_condition_fn=retry_unless_input_error, cache_policy=step_policy(
          "register", "record", "run_id", "bundle_uri", "gate_passed", "tracking_uri"))
def register_task(record: RunRecord, run_id: str, bundle_uri: str, gate_passed: bool,
                  tracking_uri: str, endpoint_url: str | None) -> RegisteredVersion:
    with registry_errors(tracking_uri, f"register a version of {record.model_name!r}"):
        return register_version(record, run_id, bundle_uri, gate_passed, tracking_uri,
                                discard_bundle=lambda uri: delete_bundle(uri, endpoint_url))
