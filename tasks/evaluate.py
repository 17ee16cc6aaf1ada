"""Evaluate a model with lm-evaluation-harness: stock task definitions, local data, per-sample records kept.

The baseline is the unquantized checkpoint; the candidate is ModelOpt's simulated quantization of the
same checkpoint (restored from the calibrated state), evaluated on the same documents.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task

from enginewright.atomic import written_whole
from enginewright.cache_policies import step_code_version, step_policy
from enginewright.hashing import sha256_file, sha256_json
from enginewright.models import load_model, load_tokenizer
from enginewright.spec import EvaluationSpec
from enginewright.work_dir import WorkDir
from tasks.eval_data import EvalData, lm_eval_task_configs, task_family
from tasks.export_verify import load_exported_weights
from tasks.quantize import QuantizedState, restore_quantized

SAMPLE_FIELDS = ("doc_id", "doc_hash", "prompt_hash", "target_hash", "acc", "acc_norm")


@dataclass(frozen=True)
class EvalResult:
    label: str  # "baseline" or "candidate"
    metrics: dict[str, dict[str, float]]  # task family -> {"acc", "acc_norm", "n"}
    samples_path: Path  # JSONL of per-sample records
    lm_eval_version: str
    seconds: float  # time spent evaluating in this run (0 when every task came from the baseline store)
    docs_evaluated: int  # documents evaluated in this run

    def cache_identity(self) -> dict[str, str]:
        """The records themselves: a downstream step is keyed by what was evaluated, not where it lies."""
        return {"label": self.label, "samples_sha256": sha256_file(self.samples_path)}

    @property
    def docs_per_second(self) -> float:
        return self.docs_evaluated / self.seconds if self.seconds else 0.0


def sample_records(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """lm-eval's logged samples reduced to what the gate joins on, plus each choice's log-likelihood."""
    records = []
    for task_name, rows in sorted(samples.items()):
        for row in rows:
            record: dict[str, Any] = {"task": task_family(task_name), "subtask": task_name}
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


@functools.cache
def task_manager():
    """lm-eval's task index takes 6–7 s to build; one per process is enough."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def run_lm_eval(
    model: torch.nn.Module, tokenizer: Any, spec: EvaluationSpec, tasks: Sequence[str], data: EvalData, cache_dir: Path
) -> tuple[list[dict[str, Any]], float]:
    """Per-sample records of `tasks` for an in-memory model, and the seconds the evaluation took."""
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
    return evaluate_lm(lm, spec, tasks, data, cache_dir), time.perf_counter() - started


def evaluate_lm(lm: Any, spec: EvaluationSpec, tasks: Sequence[str], data: EvalData, cache_dir: Path) -> list[dict[str, Any]]:
    import lm_eval

    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=lm_eval_task_configs(data, tasks, cache_dir),
        num_fewshot=spec.num_fewshot,
        limit=spec.limit,
        log_samples=True,
        task_manager=task_manager(),
        bootstrap_iters=0,  # the gate does its own paired statistics
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
    )
    return sample_records(output["samples"])


def write_records(records: list[dict[str, Any]], path: Path) -> None:
    with written_whole(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm-eval")


def baseline_key(source_identity: str, task_name: str, data: EvalData, spec: EvaluationSpec, dtype: str) -> str:
    """What a baseline result depends on; every later build of the same revision reuses it, until the
    evaluation code changes (an upgrade never pairs a candidate with a baseline of older code)."""
    return sha256_json([source_identity, task_name, data.task_fingerprints[task_name], lm_eval_version(),
                        spec.num_fewshot, spec.limit, dtype, step_code_version("evaluate-baseline")])


def evaluate_baseline(
    checkpoint: Path, source_identity: str, dtype: str, spec: EvaluationSpec, data: EvalData, cache_dir: Path,
    store_dir: Path, samples_file: Path,
) -> EvalResult:
    """Baseline records per task from the store; the missing tasks evaluated together in one lm-eval run."""
    stored = {t: store_dir / baseline_key(source_identity, t, data, spec, dtype)[:32] / "samples.jsonl"
              for t in spec.tasks}
    missing = [t for t, path in stored.items() if not path.is_file()]
    seconds, evaluated = 0.0, 0
    if missing:
        model = load_model(checkpoint, dtype)
        records, seconds = run_lm_eval(model, load_tokenizer(checkpoint), spec, missing, data, cache_dir)
        evaluated = len(records)
        for task_name in missing:
            write_records([r for r in records if r["task"] == task_name], stored[task_name])
    merged = [json.loads(line) for t in spec.tasks for line in stored[t].read_text().splitlines() if line]
    write_records(merged, samples_file)
    return EvalResult(label="baseline", metrics=summarize(merged), samples_path=samples_file,
                      lm_eval_version=lm_eval_version(), seconds=seconds, docs_evaluated=evaluated)


def evaluate_candidate(
    checkpoint: Path, state: QuantizedState, dtype: str, spec: EvaluationSpec, data: EvalData,
    cache_dir: Path, samples_file: Path, exported_checkpoint: Path | None = None,
) -> EvalResult:
    """The candidate's records: ModelOpt's simulated quantization restored from `state`, computing with the weight
    codes of `exported_checkpoint` (the bytes that ship) where given and weights are folded."""
    model = load_candidate(checkpoint, state, dtype, fold=spec.fold_weights,
                           exported=exported_checkpoint if spec.fold_weights else None)
    records, seconds = run_lm_eval(model, load_tokenizer(checkpoint), spec, list(spec.tasks), data, cache_dir)
    write_records(records, samples_file)
    return EvalResult(label="candidate", metrics=summarize(records), samples_path=samples_file,
                      lm_eval_version=lm_eval_version(), seconds=seconds, docs_evaluated=len(records))


def load_candidate(checkpoint: Path, state: QuantizedState, dtype: str, fold: bool,
                   exported: Path | None = None) -> torch.nn.Module:
    """The calibrated model restored from its saved state; weight quantizers folded when `fold` — into the
    exported checkpoint's weights when `exported` is given (tasks/export_verify.py), else ModelOpt's own QDQ."""
    model = restore_quantized(checkpoint, state, dtype)
    if exported is not None:
        load_exported_weights(model, exported)
    elif fold:
        fold_weights(model)
    return model


def fold_weights(model: torch.nn.Module) -> None:
    """Store each quantized weight as its quantize-dequantize result once and turn the weight quantizers off.

    Activation quantizers stay on, so the forward pass computes what the fake-quantized model computes.
    """
    import modelopt.torch.quantization as mtq

    with torch.no_grad():
        mtq.fold_weight(model)


# What the evaluation settings change; where the data lives and the batch size do not (the data by content).
EVAL_EXCLUDE: dict[str, tuple[str, ...]] = {"spec": ("data_dir", "batch_size")}


@task(name="evaluate-baseline", persist_result=True, cache_policy=step_policy(
    "evaluate-baseline", "source_identity", "dtype", "spec", "data", exclude=EVAL_EXCLUDE, tools=("lm-eval",),
    writes_into="out_dir"))
def baseline_task(
    checkpoint: Path, source_identity: str, dtype: str, spec: EvaluationSpec, data: EvalData, cache_dir: Path,
    store_dir: Path, out_dir: Path,
) -> EvalResult:
    return evaluate_baseline(checkpoint, source_identity, dtype, spec, data, cache_dir, store_dir,
                             out_dir / "baseline-samples.jsonl")


@task(name="evaluate-candidate", persist_result=True, cache_policy=step_policy(
    "evaluate-candidate", "work", "state", "dtype", "spec", "data", "engine", exclude=EVAL_EXCLUDE,
    tools=("lm-eval",)))
def candidate_task(
    work: WorkDir, checkpoint: Path, state: QuantizedState, dtype: str, spec: EvaluationSpec, data: EvalData,
    cache_dir: Path, engine: dict[str, Any],
) -> EvalResult:
    """The simulated candidate, also where the TensorRT-LLM lane loaded the bundle: lm-eval's stock `trtllm` model
    misreads TensorRT-LLM's next-token-aligned prompt log-probabilities on every loglikelihood task and ignores
    the bundle's llm_api.yaml (issue 19), so it is not used until our own runtime model class exists."""
    if engine.get("status") in ("loaded", "built"):
        get_run_logger().warning("TensorRT-LLM loaded the bundle, but the candidate is evaluated simulated: no "
                                 "runtime evaluation that computes loglikelihood correctly exists yet")
    return evaluate_candidate(checkpoint, state, dtype, spec, data, cache_dir,
                              work.evaluation / "candidate-samples.jsonl", exported_checkpoint=work.checkpoint)
