"""`build_engine`: checkpoint → calibration → ModelOpt → bundle → lm-eval (smoke check first, golden outputs last,
on the models it loads) → gate → MLflow, one Prefect flow.

The flow only composes: each task takes its real inputs and its cache policy (`enginewright.keys.cache_policies`)
keys them, so a second identical run recomputes nothing and registers no second version, and a changed step
recomputes with everything after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.settings import (
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)

from enginewright.bundle.manifest import bundle_bytes
from enginewright.config.schemas import EngineLane, GateReport
from enginewright.config.settings import Settings, load_settings
from enginewright.config.spec import BuildSpec
from enginewright.ops.process_env import prepare_process
from tasks.auto_quantize import search_task
from tasks.bundle import bundle_task
from tasks.calibration import calibration_task, fingerprint_calibration_task
from tasks.checkpoint_sources import source_context
from tasks.eval_data import eval_data_task
from tasks.evaluate import EvalResult, evaluate_task
from tasks.export import export_task
from tasks.gate import gate_task
from tasks.plan import gate_plan, plan_build, plan_memory
from tasks.quantize import quantize_task
from tasks.records import describe_build, run_record
from tasks.register import (
    RegisteredVersion,
    evaluated_again_note,
    log_run_task,
    register_task,
    require_gate_passed,
    require_reevaluation_allowed,
    store_bundle_task,
    version_passes,
)
from tasks.runtime_config import runtime_config_task
from tasks.sources import resolve_task
from tasks.trtllm_build import trtllm_build_task


@dataclass(frozen=True)
class BuildOutcome:
    build_key: str
    registered: RegisteredVersion
    baseline: EvalResult
    candidate: EvalResult
    gate: GateReport
    engine: EngineLane
    bundle_bytes: int  # sum of the manifest's file sizes (the checkpoint dominates)
    registered_now: bool  # False when this run found the version already registered (or cached)
    version_verdict: str = ""  # the verdict the version stands on: this run's, unless it only evaluated it again
    evaluated_again: str | None = None  # a registered key evaluated again without re-judging it: what happened
    evaluation_run_id: str = ""  # the MLflow run holding this build's evidence (the version's own run, or a later one)
    effective_bits: float | None = None  # average bits per weight of the quantizable layers (QuantizedState's)
    mix: dict[str, Any] | None = None  # an AutoQuantize build's budget, bits and layer groups


# No log_prints: dill (under datasets) captures stdout to read dis.dis output, which a patched print breaks.
@flow(name="build_engine")
def build_engine(spec: BuildSpec, settings: Settings | None = None) -> BuildOutcome:
    settings = settings or load_settings()
    prepare_process(settings)
    started_ms = int(time.time() * 1000)  # the MLflow run spans the build, not just its logging
    source = resolve_task(spec.source, source_context(settings))
    fingerprint = fingerprint_calibration_task(spec.calibration)
    eval_data = eval_data_task(spec.evaluation.data_dir, list(spec.evaluation.tasks), spec.evaluation.num_fewshot)
    log = get_run_logger().info
    plan = plan_build(spec, source.identity, fingerprint, settings.builds_dir, log)
    work = plan.work
    verdict_plan = gate_plan(spec, eval_data)  # what a verdict of this build stands for (tag gate.plan)
    require_reevaluation_allowed(spec.registry.reevaluate, spec.registry.model_name, plan.key.digest, verdict_plan,
                                 settings.tracking_uri)
    memory = plan_memory(source.path, spec, settings.device_memory_limit, settings.builds_dir, log)

    with work.locked(on_wait=log):
        calib = calibration_task(spec.calibration, source.path, source.identity, fingerprint, settings.calibration_dir)
        search = search_task(spec.quantization, source.path, source.identity, calib, spec.dtype,
                             spec.calibration.batch_size, settings.auto_quantize_dir)  # None: one format
        state = quantize_task(work, source.path, calib, spec.quantization, spec.dtype, spec.calibration.batch_size,
                              memory, search)
        exported = export_task(work, source.path, state, spec.dtype, memory)
        runtime_config_task(work, spec.runtime, spec.quantization.kv_cache)
        # A Completed state named Skipped (or the lane's status); its data is the status either way.
        engine: EngineLane = trtllm_build_task(
            work, spec.gate.smoke_prompts, spec.gate.smoke_max_new_tokens, spec.runtime.legacy_engine,
            spec.runtime.max_batch_size, spec.runtime.max_num_tokens, return_state=True,
        ).result()

        evaluation = evaluate_task(work, source.path, source.identity, state, spec.dtype, spec.evaluation,
                                   spec.gate, eval_data, settings.eval_cache_dir, settings.baselines_dir, engine,
                                   str(settings.vllm_python) if settings.vllm_python else None)
        baseline, candidate = evaluation.baseline, evaluation.candidate
        gate = gate_task(work, evaluation, spec.gate, spec.evaluation)

        description = describe_build(spec, plan.key, work, source, calib, fingerprint, state, exported.verification,
                                     baseline, candidate, engine, gate, exported.memory_plan)
        manifest = bundle_task(work, description.card, description.manifest_fields, evaluation.golden)
        record = run_record(spec, work, description, baseline, candidate, gate, engine, manifest, verdict_plan)
        run = log_run_task(record, settings.tracking_uri, settings.artifact_root, started_ms)
        require_gate_passed(gate, run, verdict_plan)
        bundle_uri = store_bundle_task(work.bundle, manifest, run, settings.bundle_root, settings.s3_endpoint_url,
                                       settings.transfer)
        register_state = register_task(record, run.run_id, bundle_uri, version_passes(gate, run),
                                       settings.tracking_uri, settings.s3_endpoint_url, return_state=True)
        registered: RegisteredVersion = register_state.result()
    return BuildOutcome(build_key=plan.key.digest, registered=registered, baseline=baseline, candidate=candidate,
                        gate=gate, engine=engine, bundle_bytes=bundle_bytes(manifest),
                        registered_now=registered.created and register_state.name != "Cached",
                        version_verdict=run.standing_verdict(gate),
                        evaluated_again=evaluated_again_note(run, gate, verdict_plan), evaluation_run_id=run.run_id,
                        effective_bits=state.effective_bits, mix=state.mix)


def run_build(spec: BuildSpec, settings: Settings) -> State:
    """Run the flow with its task results (the cache) kept under the work directory.

    Returns the flow run's final state; `.result()` gives the BuildOutcome or raises the step's error.
    """
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    updates = {PREFECT_RESULTS_LOCAL_STORAGE_PATH: settings.results_dir, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}
    with temporary_settings(updates=updates):
        return build_engine(spec, settings, return_state=True)
