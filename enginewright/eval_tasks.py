"""The evaluation tasks, one row each: where lm-eval's stock task reads its local data, which split it evaluates,
the gate's metric, and how its documents are sampled. Adding a task is adding a row (tests/test_eval_data.py takes
every row through the data check, lm-eval's task configs and the document order)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalTaskInfo:
    name: str
    folder: str  # <data_dir>/<folder>/<split>.jsonl
    splits: tuple[str, ...]  # every split lm-eval's stock task reads (few-shot splits included)
    eval_split: str  # the split it evaluates: the documents the gate samples from
    metric: str  # lm-eval's conventional metric for it
    strata: str | None  # a field whose values are lm-eval subtasks (MMLU's subjects): sampled stratified by it


_ROWS = (
    EvalTaskInfo("mmlu", "mmlu", ("dev", "test"), "test", "acc", "subject"),
    EvalTaskInfo("arc_easy", "arc_easy", ("train", "validation", "test"), "test", "acc_norm", None),
    EvalTaskInfo("arc_challenge", "arc_challenge", ("train", "validation", "test"), "test", "acc_norm", None),
    EvalTaskInfo("hellaswag", "hellaswag", ("validation",), "validation", "acc_norm", None),
)
EVAL_TASKS: dict[str, EvalTaskInfo] = {row.name: row for row in _ROWS}
EVAL_TASK_NAMES: tuple[str, ...] = tuple(EVAL_TASKS)
