"""Evaluate a model with lm-evaluation-harness: stock task definitions, local data, per-sample records kept.

The baseline is the unquantized checkpoint; the candidate is ModelOpt's simulated quantization of the
same checkpoint (restored from the calibrated state), evaluated on the same documents.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import task

from enginewright.caching import keyed_by
from enginewright.models import load_model, load_tokenizer
from enginewright.spec import EvaluationSpec
from tasks.eval_data import EvalData, lm_eval_task_configs, task_family
from tasks.quantize import QuantizedState, restore_quantized

SAMPLE_FIELDS = ("doc_id", "doc_hash", "prompt_hash", "target_hash", "acc", "acc_norm")


@dataclass(frozen=True)
class EvalResult:
    label: str  # "baseline" or "candidate"
    metrics: dict[str, dict[str, float]]  # task family -> {"acc", "acc_norm", "n"}
    samples_path: Path  # JSONL of per-sample records
    lm_eval_version: str
    seconds: float

    @property
    def docs_per_second(self) -> float:
        total = sum(m["n"] for m in self.metrics.values())
        return total / self.seconds if self.seconds else 0.0


def sample_records(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """lm-eval's logged samples reduced to what the gate joins on, plus each choice's log-likelihood."""
    records = []
    for task_name, rows in sorted(samples.items()):
        for row in rows:
            record = {"task": task_family(task_name), "subtask": task_name}
            record.update({k: row[k] for k in SAMPLE_FIELDS if k in row})
            record["loglikelihoods"] = [float(r[0]) for r in row.get("filtered_resps", [])]
            records.append(record)
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    metrics: dict[str, dict[str, float]] = {}
    for family in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == family]
        summary = {"n": float(len(rows)), "acc": sum(r["acc"] for r in rows) / len(rows)}
        if all("acc_norm" in r for r in rows):
            summary["acc_norm"] = sum(r["acc_norm"] for r in rows) / len(rows)
        metrics[family] = summary
    return metrics


def run_lm_eval(
    model: torch.nn.Module, tokenizer, spec: EvaluationSpec, data: EvalData, cache_dir: Path,
    samples_file: Path, label: str,
) -> EvalResult:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    started = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=lm_eval_task_configs(data, list(spec.tasks), cache_dir),
        num_fewshot=spec.num_fewshot,
        limit=spec.limit,
        log_samples=True,
        task_manager=TaskManager(),
        bootstrap_iters=0,  # our gate does its own paired statistics
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
    )
    seconds = time.perf_counter() - started
    records = sample_records(output["samples"])
    samples_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = samples_file.with_suffix(".partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(samples_file)
    return EvalResult(label=label, metrics=summarize(records), samples_path=samples_file,
                      lm_eval_version=lm_eval.__version__, seconds=seconds)


def evaluate_baseline(
    checkpoint: Path, dtype: str, spec: EvaluationSpec, data: EvalData, cache_dir: Path, samples_file: Path
) -> EvalResult:
    model = load_model(checkpoint, dtype)
    return run_lm_eval(model, load_tokenizer(checkpoint), spec, data, cache_dir, samples_file, "baseline")


def evaluate_candidate(
    checkpoint: Path, state: QuantizedState, dtype: str, spec: EvaluationSpec, data: EvalData,
    cache_dir: Path, samples_file: Path,
) -> EvalResult:
    model = restore_quantized(checkpoint, state, dtype)
    if spec.fold_weights:
        fold_weights(model)
    return run_lm_eval(model, load_tokenizer(checkpoint), spec, data, cache_dir, samples_file, "candidate")


def fold_weights(model: torch.nn.Module) -> None:
    """Store each quantized weight as its quantize-dequantize result once and turn the weight quantizers off.

    Activation quantizers stay on, so the forward pass computes what the fake-quantized model computes.
    """
    import modelopt.torch.quantization as mtq

    with torch.no_grad():
        mtq.fold_weight(model)


@task(name="evaluate-baseline", cache_key_fn=keyed_by("evaluate-baseline"), persist_result=True)
def baseline_task(
    cache_key: str, checkpoint: Path, dtype: str, spec: EvaluationSpec, data: EvalData, cache_dir: Path,
    samples_file: Path,
) -> EvalResult:
    return evaluate_baseline(checkpoint, dtype, spec, data, cache_dir, samples_file)


@task(name="evaluate-candidate", cache_key_fn=keyed_by("evaluate-candidate"), persist_result=True)
def candidate_task(
    cache_key: str, checkpoint: Path, state: QuantizedState, dtype: str, spec: EvaluationSpec, data: EvalData,
    cache_dir: Path, samples_file: Path,
) -> EvalResult:
    return evaluate_candidate(checkpoint, state, dtype, spec, data, cache_dir, samples_file)
