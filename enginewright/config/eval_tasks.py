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
    # The split lm-eval draws few-shot examples from (per stratum): MMLU's `fewshot_split: dev`
    # (lm_eval/tasks/mmlu/default/_default_template_yaml, lm-eval 0.4.13), else the training split
    # (lm_eval/api/task.py Task.fewshot_docs). Its smallest stratum bounds evaluation.num_fewshot: lm-eval's
    # samplers assert or raise past it (lm_eval/api/samplers.py FirstNSampler.sample, ContextSampler.sample).
    fewshot_split: str
    # Whether the stock task draws its examples at random (lm-eval's "default" sampler: the stream is then re-seeded
    # per document, tasks/fewshot.py) or takes the split's first ones (MMLU's `sampler: first_n`, the same file).
    fewshot_random: bool
    # A field whose equal values mark documents that are not independent draws: HellaSwag's `source_id` (the
    # endings of one ActivityNet/WikiHow source, up to 5 documents each in the local split). The gate's variance is
    # then cluster-robust (enginewright.gate.paired_stats.PairedCounts.design_effect); None: independent documents.
    cluster: str | None = None


_ROWS = (
    EvalTaskInfo("mmlu", "mmlu", ("dev", "test"), "test", "acc", "subject", "dev", False),
    EvalTaskInfo("arc_easy", "arc_easy", ("train", "validation", "test"), "test", "acc_norm", None, "train", True),
    EvalTaskInfo("arc_challenge", "arc_challenge", ("train", "validation", "test"), "test", "acc_norm", None, "train",
                 True),
    EvalTaskInfo("hellaswag", "hellaswag", ("validation",), "validation", "acc_norm", None, "train", True,
                 cluster="source_id"),
)
EVAL_TASKS: dict[str, EvalTaskInfo] = {row.name: row for row in _ROWS}
EVAL_TASK_NAMES: tuple[str, ...] = tuple(EVAL_TASKS)
