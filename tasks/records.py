"""What a build records about itself: the lineage documents, the model card, the manifest's fields and the
MLflow run's params, metrics and tags. Pure functions of the build's results (schemas in `schemas.py`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from enginewright.bundle.manifest import bundle_bytes
from enginewright.config.schemas import (
    CalibrationDoc,
    EngineLane,
    GateReport,
    Manifest,
    QuantizationDoc,
    SourceDoc,
)
from enginewright.config.spec import BuildSpec
from enginewright.keys.build_key import BuildKey
from enginewright.keys.environment import environment_fingerprint
from enginewright.keys.hashing import sha256_json
from enginewright.keys.work_dir import WorkDir
from enginewright.quant.calibrate import QuantizedState
from enginewright.quant.memory_plan import MemoryPlan
from tasks.calibration import CalibrationSet
from tasks.evaluate import EvalResult
from tasks.export import exported_quant_algo
from tasks.export_verify import ExportVerification
from tasks.gate import gate_markdown
from tasks.model_card import render_model_card
from tasks.register import GATE_PLAN_TAG, RunRecord
from tasks.sources import ResolvedSource


@dataclass(frozen=True)
class BuildDescription:
    """The card and the manifest's fields: written into the bundle by the bundle step."""

    card: str
    manifest_fields: dict[str, Any]


def lineage_docs(source: ResolvedSource, spec: BuildSpec, calib: CalibrationSet, calibration_fingerprint: str,
                 state: QuantizedState, work: WorkDir) -> tuple[SourceDoc, QuantizationDoc, CalibrationDoc]:
    quant = exported_quant_algo(work.checkpoint)
    source_doc: SourceDoc = {"kind": source.kind, "model": source.model, "repo_id": source.repo_id,
                             "revision": source.revision}
    auto = spec.quantization.auto
    quantization_doc: QuantizationDoc = {
        "format": spec.quantization.variant, "kv_cache": spec.quantization.kv_cache, "recipe": state.recipe,
        "awq_block_size": state.awq_block_size, "quant_algo": quant.get("quant_algo"),
        "kv_cache_quant_algo": quant.get("kv_cache_quant_algo"), "effective_bits": state.effective_bits,
        "mix": None if state.mix is None or auto is None else {
            **state.mix, "candidates": list(auto.formats), "method": auto.method, "score_batches": auto.score_batches,
            "keep_unquantized": list(auto.keep_unquantized)},
    }
    calibration_doc: CalibrationDoc = {
        "num_samples": calib.num_samples, "seq_len": calib.seq_len, "seed": spec.calibration.seed,
        "source_fingerprint": calibration_fingerprint, "tokens_sha256": calib.sha256,
    }
    return source_doc, quantization_doc, calibration_doc


def describe_build(spec: BuildSpec, key: BuildKey, work: WorkDir, source: ResolvedSource, calib: CalibrationSet,
                   calibration_fingerprint: str, state: QuantizedState, verification: ExportVerification,
                   baseline: EvalResult, candidate: EvalResult, engine: EngineLane,
                   gate: GateReport, exported_plan: MemoryPlan | None = None) -> BuildDescription:
    """`exported_plan`: the export step's memory plan (the quantize step's is in `state`); both come from the steps'
    results, so a cached rerun records the plans that ran, not this worker's free memory now."""
    source_doc, quantization_doc, calibration_doc = lineage_docs(source, spec, calib, calibration_fingerprint,
                                                                 state, work)
    card = render_model_card(spec.registry.model_name, key.digest, dict(source_doc), dict(quantization_doc),
                             dict(calibration_doc), baseline, engine,
                             spec.evaluation.model_dump(mode="json"), gate_markdown(gate), verification.summary())
    return BuildDescription(card=card, manifest_fields={
        "bundle_id": key.digest, "build_key": {"digest": key.digest, "parts": key.parts}, "source": source_doc,
        "quantization": quantization_doc, "calibration": calibration_doc, "environment": environment_fingerprint(),
        "engine": engine, "export_verification": asdict(verification),
        "memory_plan": {step: plan.model_dump(mode="json") if plan is not None else None
                        for step, plan in (("quantize", state.memory_plan), ("export", exported_plan))},
    })


def run_record(spec: BuildSpec, work: WorkDir, description: BuildDescription, baseline: EvalResult,
               candidate: EvalResult, gate: GateReport, engine: EngineLane, manifest: Manifest,
               gate_plan: str) -> RunRecord:
    fields = description.manifest_fields
    return RunRecord(
        model_name=spec.registry.model_name,
        build_key=work.build_key,
        evidence={"evaluation": [baseline.samples_path, candidate.samples_path,
                                 work.evaluation / "samples.json"],
                  "gate": [work.gate / "gate_report.json", work.gate / "gate_plot.png"]},
        params=run_params(spec),
        metrics=run_metrics(baseline, candidate, gate, engine),
        tags=lineage_tags(work.build_key, fields["source"], fields["quantization"], fields["calibration"],
                          fields["environment"], engine) | gate_tags(gate)
        | {"bundle.bytes": str(bundle_bytes(manifest)), GATE_PLAN_TAG: gate_plan},
        description=description.card,
        reevaluate=spec.registry.reevaluate,
    )



def run_params(spec: BuildSpec) -> dict[str, str]:
    return {
        "source.model": spec.source.model, "source.revision": str(spec.source.revision),
        "quantization.format": spec.quantization.variant, "quantization.kv_cache": str(spec.quantization.kv_cache),
        "calibration.num_samples": str(spec.calibration.num_samples),
        "calibration.seq_len": str(spec.calibration.seq_len), "calibration.seed": str(spec.calibration.seed),
        "evaluation.tasks": ",".join(spec.evaluation.tasks), "evaluation.limit": str(spec.evaluation.limit),
        "evaluation.num_fewshot": str(spec.evaluation.num_fewshot), "dtype": spec.dtype,
        "gate.max_drop_points": str(spec.gate.max_drop_points), "gate.min_recovery": str(spec.gate.min_recovery),
    }


def run_metrics(baseline: EvalResult, candidate: EvalResult, gate: GateReport, engine: EngineLane) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for result in (baseline, candidate):
        for task_name, values in result.metrics.items():
            for metric, value in values.items():
                metrics[f"{result.label}.{task_name}.{metric}"] = float(value)
        if result.docs_evaluated:
            metrics[f"{result.label}.docs_per_second"] = result.docs_per_second
    metrics.update({f"engine.{k}": float(v) for k, v in engine.items() if isinstance(v, int | float)})
    metrics.update({f"engine.bench.{k}": v for k, v in engine.get("bench", {}).items()})
    for row in gate["tasks"]:
        metrics[f"gate.{row['task']}.difference_points"] = float(row["difference_points"])
        metrics[f"gate.{row['task']}.ci_low_points"] = float(row["ci_low_points"])
        metrics[f"gate.{row['task']}.ci_high_points"] = float(row["ci_high_points"])
        metrics[f"gate.{row['task']}.p_noninferiority"] = float(row["p_noninferiority"])
        metrics[f"gate.{row['task']}.documents"] = float(row["n"])
        metrics[f"gate.{row['task']}.tie_rate_candidate"] = float(row["tie_rate_candidate"])
        metrics[f"gate.{row['task']}.allowed_drop_points"] = float(row["allowed_drop_points"])
        if row["recovery"] is not None:
            metrics[f"gate.{row['task']}.recovery"] = float(row["recovery"])
    return metrics


def gate_digest(gate: GateReport) -> str:
    """What identifies a gate's evidence: its verdict and every task's row (documents, accuracies, interval, margin).
    A re-evaluation with new evidence has another digest, even where the verdict is the same."""
    return sha256_json([gate["overall"], gate["tasks"]])[:16]


def gate_tags(gate: GateReport) -> dict[str, str]:
    tags = {"gate.verdict": gate["overall"], "gate.digest": gate_digest(gate)}
    for row in gate["tasks"]:
        tags[f"gate.{row['task']}.verdict"] = row["verdict"]
        tags[f"gate.{row['task']}.difference_points"] = f"{row['difference_points']:+.2f}"
        tags[f"gate.{row['task']}.baseline"] = f"{row['baseline']:.4f}"
        tags[f"gate.{row['task']}.candidate"] = f"{row['candidate']:.4f}"
        tags[f"gate.{row['task']}.ci_points"] = f"[{row['ci_low_points']:+.2f}, {row['ci_high_points']:+.2f}]"
        tags[f"gate.{row['task']}.documents"] = f"{row['n']}/{row['documents_planned']}"
        tags[f"gate.{row['task']}.allowed_drop_points"] = f"{row['allowed_drop_points']:.2f}"
    runtime = gate["candidate_runtime"]
    tags["runtime.candidate"] = runtime["runtime"]
    if runtime["agreement_low"]:
        tags["runtime.agreement_low"] = ",".join(runtime["agreement_low"])
    return tags


def lineage_tags(digest: str, source: SourceDoc, quantization: QuantizationDoc, calibration: CalibrationDoc,
                 environment: dict[str, str], engine: EngineLane) -> dict[str, str]:
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
    } | effective_bits_tags(quantization)


def effective_bits_tags(quantization: QuantizationDoc) -> dict[str, str]:
    """The bits achieved, and for an AutoQuantize mix its budget, candidates and each layer group's format (one tag
    per group: `quantization.layer.<first module>`), so the registry can be searched by them."""
    tags = {} if quantization.get("effective_bits") is None else {
        "quantization.effective_bits": f"{quantization['effective_bits']:.2f}"}
    mix = quantization.get("mix")
    if mix:
        tags |= {"quantization.auto.budget": f"{mix['budget']:g}", "quantization.auto.candidates": ",".join(mix["candidates"]),
                 "quantization.auto.method": mix["method"]}
        tags |= {f"quantization.layer.{name}": fmt for name, fmt in mix["groups"].items()}
    return tags
