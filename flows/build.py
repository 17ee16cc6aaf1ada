"""`build_engine`: checkpoint → calibration → ModelOpt → bundle → lm-eval → gate → MLflow, one Prefect flow.

Every step is cached under the build key (or a narrower key for steps that do not depend on the recipe),
so a second identical run recomputes nothing and registers no second version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.settings import (
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)

from enginewright.build_key import compute_build_key
from enginewright.bundle_store import bundle_location
from enginewright.caching import incarnation
from enginewright.environment import environment_fingerprint, key_tool_versions
from enginewright.hashing import sha256_json
from enginewright.schemas import GateReport
from enginewright.settings import Settings
from enginewright.spec import BuildSpec
from tasks.bundle import bundle_task
from tasks.calibration import CalibrationSet, calibration_task, fingerprint_calibration_task
from tasks.eval_data import eval_data_task
from tasks.evaluate import EvalResult, baseline_key, baseline_task, candidate_task, lm_eval_version
from tasks.export import export_task, exported_quant_algo
from tasks.gate import GateFailed, gate_markdown, gate_task
from tasks.model_card import render_model_card
from tasks.quantize import quantize_task
from tasks.register import RegisteredVersion, RunRecord, log_run_task, register_task, store_bundle_task
from tasks.runtime_config import runtime_config_task
from tasks.smoke import smoke_task
from tasks.sources import resolve_task
from tasks.trtllm_build import RUNTIME_LOADED, trtllm_build_task


@dataclass(frozen=True)
class BuildOutcome:
    build_key: str
    registered: RegisteredVersion
    baseline: EvalResult
    candidate: EvalResult
    gate: GateReport
    engine: dict[str, Any]
    bundle_bytes: int  # sum of the manifest's file sizes (the checkpoint dominates)
    registered_now: bool  # False when this run found the version already registered (or cached)


# No log_prints: dill (under datasets) captures stdout to read dis.dis output, which a patched print breaks.
@flow(name="build_engine")
def build_engine(spec: BuildSpec) -> BuildOutcome:
    settings = Settings()
    logger = get_run_logger()
    source = resolve_task(spec.source)
    calibration_fingerprint = fingerprint_calibration_task(spec.calibration)
    eval_data = eval_data_task(spec.evaluation.data_dir, list(spec.evaluation.tasks), spec.evaluation.num_fewshot)

    key = compute_build_key(source.identity, spec, calibration_fingerprint,
                            key_tool_versions(engine_target=spec.runtime.legacy_engine))
    digest = key.digest
    work = settings.builds_dir / key.short
    bundle_dir = work / "bundle"
    bundle_dir.mkdir(parents=True, exist_ok=True)
    cache_key = f"{digest}.{incarnation(work)}"
    logger.info("build key %s (work dir %s)", digest, work)

    calib = shared_calibration(settings, spec, source, calibration_fingerprint)
    state = quantize_task(cache_key, source.path, calib, spec.quantization, spec.dtype, spec.calibration.batch_size,
                          work / "quantized.mto.pth")
    checkpoint_dir = export_task(cache_key, source.path, state, spec.dtype, bundle_dir / "checkpoint")
    runtime_config_task(cache_key, spec.runtime, spec.quantization.kv_cache, bundle_dir / "llm_api.yaml")
    # A Completed state named Skipped (or the lane's status); its data is the status either way.
    engine: dict[str, Any] = trtllm_build_task(
        cache_key, bundle_dir, spec.gate.smoke_prompts, spec.gate.smoke_max_new_tokens, spec.runtime.legacy_engine,
        spec.runtime.max_batch_size, spec.runtime.max_num_tokens, spec.registry.model_name, work, return_state=True,
    ).result()

    if spec.gate.smoke:
        smoke_key = sha256_json([spec.gate.smoke_prompts, spec.gate.smoke_max_new_tokens])
        smoke = smoke_task(f"{cache_key}.{smoke_key[:16]}", source.path, state, spec.dtype, spec.gate.smoke_prompts,
                           spec.gate.smoke_max_new_tokens)
        logger.info("smoke check: %s (%s)", smoke["verdict"], smoke["reason"])
        if smoke["verdict"] == "fail":
            raise GateFailed(f"smoke check failed before evaluation: {smoke['reason']}")

    eval_settings = spec.evaluation.model_dump(mode="json", exclude={"data_dir", "batch_size"})
    eval_key = sha256_json([eval_settings, eval_data.fingerprint, spec.dtype, lm_eval_version(),
                            key_tool_versions(engine_target=spec.runtime.legacy_engine)])
    baseline_keys, baseline = shared_baseline(settings, spec, source, eval_data, work)
    candidate = candidate_task(f"{sha256_json([digest, eval_key])}.{incarnation(work)}", source.path, state,
                               spec.dtype, spec.evaluation, eval_data, settings.home / "eval-data",
                               work / "evaluation" / "candidate-samples.jsonl",
                               checkpoint_dir if engine["status"] in RUNTIME_LOADED else None)
    gate_key = sha256_json([baseline_keys, eval_key, spec.gate.model_dump(mode="json")])
    gate = gate_task(f"{gate_key}.{digest}.{incarnation(work)}", baseline.samples_path, candidate.samples_path,
                     list(spec.evaluation.tasks), spec.gate, work / "gate")
    logger.info(gate["message"])

    quant = exported_quant_algo(checkpoint_dir)
    source_doc = {"kind": source.kind, "model": source.model, "repo_id": source.repo_id, "revision": source.revision}
    quantization_doc = {
        "format": spec.quantization.format, "kv_cache": spec.quantization.kv_cache, "recipe": state.recipe,
        "awq_block_size": state.awq_block_size, "quant_algo": quant.get("quant_algo"),
        "kv_cache_quant_algo": quant.get("kv_cache_quant_algo"),
    }
    calibration_doc = {
        "num_samples": calib.num_samples, "seq_len": calib.seq_len, "seed": spec.calibration.seed,
        "source_fingerprint": calibration_fingerprint, "tokens_sha256": calib.sha256,
    }
    card = render_model_card(spec.registry.model_name, digest, source_doc, quantization_doc, calibration_doc,
                             baseline, engine, spec.evaluation.model_dump(mode="json"), gate_markdown(gate))
    # The card (and so the manifest) reflects the evaluation and gate; the build key names the bytes that serve.
    bundle_key = f"{cache_key}.{sha256_json(card)[:16]}"
    manifest = bundle_task(bundle_key, bundle_dir, card, {
        "bundle_id": digest, "build_key": {"digest": digest, "parts": key.parts}, "source": source_doc,
        "quantization": quantization_doc, "calibration": calibration_doc, "environment": environment_fingerprint(),
        "engine": engine,
    })

    record = RunRecord(
        model_name=spec.registry.model_name,
        build_key=digest,
        evidence={"evaluation": [baseline.samples_path, candidate.samples_path],
                  "gate": [work / "gate" / "gate_report.json", work / "gate" / "gate_plot.png"]},
        params=run_params(spec),
        metrics=run_metrics(baseline, candidate, gate, engine),
        tags=lineage_tags(digest, source_doc, quantization_doc, calibration_doc, manifest["environment"], engine)
        | gate_tags(gate),
        description=card,
    )
    store_key = f"{bundle_key}.{sha256_json([settings.tracking_uri, settings.bundle_root])[:12]}"
    run = log_run_task(store_key, record, settings.tracking_uri, settings.artifact_root)
    if gate["overall"] == "fail":
        raise GateFailed(f"{gate['message']} (evidence kept in MLflow run {run.run_id}; no version registered)")
    bundle_uri = run.registered_source or store_bundle_task(
        store_key, bundle_dir, manifest, bundle_location(settings.bundle_root, digest, run.run_id),
        settings.s3_endpoint_url, settings.transfer)
    register_state = register_task(store_key, record, run.run_id, bundle_uri, gate["overall"] == "pass",
                                   settings.tracking_uri, settings.s3_endpoint_url, return_state=True)
    registered: RegisteredVersion = register_state.result()
    return BuildOutcome(build_key=digest, registered=registered, baseline=baseline, candidate=candidate, gate=gate,
                        engine=engine, bundle_bytes=sum(f["size"] for f in manifest["files"]),
                        registered_now=registered.created and register_state.name != "Cached")


def shared_calibration(settings: Settings, spec: BuildSpec, source: Any, calibration_fingerprint: str) -> CalibrationSet:
    """The calibration set depends on the source and the calibration spec, not on the format: every variant of a
    matrix (and every rebuild with another recipe) shares it, through the same cache key and file."""
    calib_key = sha256_json([source.identity, spec.calibration.model_dump(exclude={"batch_size"}),
                             calibration_fingerprint])
    calib_dir = settings.home / "calibration" / calib_key[:16]
    return calibration_task(f"{calib_key}.{incarnation(calib_dir)}", spec.calibration, source.path,
                            calib_dir / "calibration.safetensors")


def shared_baseline(settings: Settings, spec: BuildSpec, source: Any, eval_data: Any, work: Path) -> tuple[list[str], EvalResult]:
    """The baseline evaluation; each task's records live in the baseline store (`home/baselines`), keyed by
    revision, task, data, lm-eval version and limit, so only the first build of a revision evaluates it."""
    baseline_keys = [baseline_key(source.identity, t, eval_data, spec.evaluation, spec.dtype)
                     for t in spec.evaluation.tasks]
    baseline = baseline_task(f"{sha256_json(baseline_keys)}.{incarnation(work)}", source.path, source.identity,
                             spec.dtype, spec.evaluation, eval_data, settings.home / "eval-data",
                             settings.home / "baselines", work / "evaluation" / "baseline-samples.jsonl")
    return baseline_keys, baseline


def run_params(spec: BuildSpec) -> dict[str, str]:
    return {
        "source.model": spec.source.model, "source.revision": str(spec.source.revision),
        "quantization.format": spec.quantization.format, "quantization.kv_cache": str(spec.quantization.kv_cache),
        "calibration.num_samples": str(spec.calibration.num_samples),
        "calibration.seq_len": str(spec.calibration.seq_len), "calibration.seed": str(spec.calibration.seed),
        "evaluation.tasks": ",".join(spec.evaluation.tasks), "evaluation.limit": str(spec.evaluation.limit),
        "evaluation.num_fewshot": str(spec.evaluation.num_fewshot), "dtype": spec.dtype,
        "gate.max_drop_points": str(spec.gate.max_drop_points), "gate.min_recovery": str(spec.gate.min_recovery),
    }


def run_metrics(baseline: EvalResult, candidate: EvalResult, gate: GateReport, engine: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for result in (baseline, candidate):
        for task_name, values in result.metrics.items():
            for metric, value in values.items():
                metrics[f"{result.label}.{task_name}.{metric}"] = float(value)
        if result.docs_evaluated:
            metrics[f"{result.label}.docs_per_second"] = result.docs_per_second
    metrics.update({f"engine.{k}": float(v) for k, v in engine.items() if isinstance(v, int | float)})
    for row in gate["tasks"]:
        for field in ("difference_points", "ci_low_points", "ci_high_points", "mcnemar_p", "allowed_drop_points"):
            metrics[f"gate.{row['task']}.{field}"] = float(row[field])  # type: ignore[literal-required]
        if row["recovery"] is not None:
            metrics[f"gate.{row['task']}.recovery"] = float(row["recovery"])
    return metrics


def gate_tags(gate: GateReport) -> dict[str, str]:
    tags = {"gate.verdict": gate["overall"]}
    for row in gate["tasks"]:
        tags[f"gate.{row['task']}.verdict"] = row["verdict"]
        tags[f"gate.{row['task']}.difference_points"] = f"{row['difference_points']:+.2f}"
        tags[f"gate.{row['task']}.baseline"] = f"{row['baseline']:.4f}"
        tags[f"gate.{row['task']}.candidate"] = f"{row['candidate']:.4f}"
        tags[f"gate.{row['task']}.ci_points"] = f"[{row['ci_low_points']:+.2f}, {row['ci_high_points']:+.2f}]"
    return tags


def lineage_tags(
    digest: str, source: dict[str, Any], quantization: dict[str, Any], calibration: dict[str, Any],
    environment: dict[str, str], engine: dict[str, Any],
) -> dict[str, str]:
    return {
        "build_key": digest,
        "source.model": str(source["model"]), "source.kind": str(source["kind"]),
        "source.repo_id": str(source["repo_id"]), "source.revision": str(source["revision"]),
        "quantization.format": str(quantization["format"]), "quantization.quant_algo": str(quantization["quant_algo"]),
        "quantization.kv_cache": str(quantization["kv_cache_quant_algo"]),
        "calibration.fingerprint": str(calibration["source_fingerprint"]),
        "calibration.tokens_sha256": str(calibration["tokens_sha256"]),
        "tools.modelopt": environment["nvidia-modelopt"], "tools.transformers": environment["transformers"],
        "tools.torch": environment["torch"], "tools.tensorrt_llm": environment["tensorrt-llm"],
        "tools.lm_eval": environment["lm-eval"], "gpu.arch": environment["gpu_sm"],
        "engine.status": engine["status"],
    }


def run_build(spec: BuildSpec, settings: Settings) -> State:
    """Run the flow with its task results (the cache) kept under the work directory.

    Returns the flow run's final state; `.result()` gives the BuildOutcome or raises the step's error.
    """
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    updates = {PREFECT_RESULTS_LOCAL_STORAGE_PATH: settings.results_dir, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}
    with temporary_settings(updates=updates):
        return build_engine(spec, return_state=True)
