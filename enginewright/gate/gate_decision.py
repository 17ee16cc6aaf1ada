"""The gate's rule for one task, from per-document records: pair them, order them by their place in the task's
seeded sequence, and decide at each planned look (enginewright.gate.paired_stats). Used while evaluating (to stop a
task once decided) and by the gate step (to report); both see the same records, so both reach the same verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from enginewright.config.eval_tasks import EVAL_TASKS
from enginewright.config.spec import EvaluationSpec, GateSpec
from enginewright.errors import EnginewrightError
from enginewright.gate.paired_stats import LookDecision, PairedCounts, sequential_decision


@dataclass(frozen=True)
class TaskPlan:
    """A task's sequential plan: cumulative documents at each look (the last: documents planned)."""

    task: str
    looks: tuple[int, ...]
    available: int  # documents the local data has
    # the cluster of each document in sequence order (eval_tasks' `cluster` field), None: independent documents
    clusters: tuple[str, ...] | None = None

    @property
    def planned(self) -> int:
        return self.looks[-1]


def task_plan(task: str, available: int, spec: EvaluationSpec, clusters: tuple[str, ...] | None = None) -> TaskPlan:
    from enginewright.gate.paired_stats import look_plan

    planned = min(spec.limit or available, available)
    if planned < 1:
        raise EnginewrightError(f"task {task}: the local data has no documents to evaluate")
    return TaskPlan(task=task, looks=look_plan(planned, spec.look_size or planned), available=available,
                    clusters=clusters)


def metric_of(task: str, spec: GateSpec) -> str:
    override = spec.tasks.get(task)
    return (override.metric if override and override.metric else None) or EVAL_TASKS[task].metric


def paired_sequence(baseline: list[dict[str, Any]], candidate: list[dict[str, Any]], task: str, metric: str,
                    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """Correctness arrays in sequence order, aligned by (lm-eval task, doc_id); refuses pairs whose documents or
    prompts differ, and records that are not one unbroken sequence."""
    base = {(r["subtask"], r["doc_id"]): r for r in baseline if r["task"] == task}
    cand = {(r["subtask"], r["doc_id"]): r for r in candidate if r["task"] == task}
    if base.keys() != cand.keys():
        missing = sorted(base.keys() ^ cand.keys())[:3]
        raise EnginewrightError(f"task {task}: baseline and candidate evaluated different documents, e.g. {missing}")
    keys = sorted(base, key=lambda k: base[k]["position"])
    for position, key in enumerate(keys):
        if base[key]["position"] != position or cand[key]["position"] != position:
            raise EnginewrightError(f"task {task}: document {key} is not at place {position} of the sequence on "
                                    "both sides; the runs are not one sequence")
        for field in ("doc_hash", "prompt_hash"):
            if base[key][field] != cand[key][field]:
                raise EnginewrightError(f"task {task}: {field} differs for document {key}; the runs are not paired")
    ordered_base, ordered_cand = [base[k] for k in keys], [cand[k] for k in keys]
    return (np.array([r[metric] for r in ordered_base], dtype=np.float64),
            np.array([r[metric] for r in ordered_cand], dtype=np.float64), ordered_base, ordered_cand)


def allowed_drop(max_drop_points: float | None, min_recovery: float | None, baseline_accuracy: float) -> float:
    """The stricter of the criteria, as a fraction of accuracy."""
    limits = []
    if max_drop_points is not None:
        limits.append(max_drop_points / 100)
    if min_recovery is not None:
        limits.append((1 - min_recovery) * baseline_accuracy)
    return min(limits)


def alphas(spec: GateSpec, task_count: int) -> tuple[float, float]:
    """(α of each task's pass test, α of each task's fail test)."""
    alpha = (1 - spec.confidence) / 2
    return alpha, (spec.family_false_fail / task_count if spec.family_false_fail is not None else alpha)


def counts_at_looks(base: np.ndarray, cand: np.ndarray, plan: TaskPlan) -> list[PairedCounts]:
    """Cumulative paired counts at each planned look the records reach (with the design effect of the documents'
    clusters where the task has them)."""
    return [PairedCounts.of(base[:n], cand[:n], plan.clusters[:n] if plan.clusters else None)
            for n in plan.looks if n <= base.size]


@dataclass(frozen=True)
class TaskDecision:
    decision: LookDecision
    counts: PairedCounts  # at the deciding (or last evaluated) look
    allowed: float  # the allowed drop, as a fraction


def decide(base: np.ndarray, cand: np.ndarray, plan: TaskPlan, spec: GateSpec, task_count: int) -> TaskDecision | None:
    """The verdict from the looks evaluated so far; None before the first look is complete."""
    counts = counts_at_looks(base, cand, plan)
    if not counts:
        return None
    allowed = allowed_drop(*spec.criteria_for(plan.task), float(base[: counts[-1].n].mean()))
    alpha_pass, alpha_fail = alphas(spec, task_count)
    decision = sequential_decision(counts, plan.looks, allowed, alpha_pass, alpha_fail)
    return TaskDecision(decision=decision, counts=counts[decision.look - 1], allowed=allowed)


def tie_rate(records: list[dict[str, Any]]) -> float:
    """Share of documents whose best choice's summed log-likelihood exactly equals another choice's (the answer is
    then decided by lm-eval's argmax order, not by the model)."""
    ties = 0
    for record in records:
        lls = record.get("loglikelihoods") or []
        if len(lls) > 1 and lls.count(max(lls)) > 1:
            ties += 1
    return ties / len(records) if records else 0.0
