"""Offline evaluation data: check the local copies, fingerprint them, and point lm-eval's stock tasks at them.

lm-eval's stock task definitions (prompts, preprocessing, metrics) are kept; only where the data comes
from is overridden (`dataset_path: json` + `data_files`). MMLU's 57 per-subject tasks need per-subject
files, which `materialize_mmlu` writes once into a cache directory named by the data fingerprint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task as prefect_task

from enginewright.config.eval_tasks import EVAL_TASKS
from enginewright.errors import EvalDataError
from enginewright.keys.cache_policies import ChangeDetector
from enginewright.keys.hashing import sha256_file, sha256_json, stat_fingerprint


@dataclass(frozen=True)
class EvalData:
    data_dir: Path
    fingerprint: str  # sha256 over the contents of every file used
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> split -> absolute path
    task_fingerprints: dict[str, str] = field(default_factory=dict)  # task -> sha256 over its files' contents

    def cache_identity(self) -> str:
        return self.fingerprint


def required_files(data_dir: Path, task: str) -> dict[str, Path]:
    row = EVAL_TASKS[task]
    return {split: data_dir / row.folder / f"{split}.jsonl" for split in row.splits}


def check_eval_data(data_dir: Path, tasks: list[str], num_fewshot: int) -> EvalData:
    if not data_dir.is_dir():
        raise EvalDataError(f"evaluation.data_dir {str(data_dir)!r} is not a directory")
    files: dict[str, dict[str, str]] = {}
    for task in tasks:
        needed = required_files(data_dir, task)
        if task == "hellaswag" and (data_dir / "hellaswag" / "train.jsonl").is_file():
            needed["train"] = data_dir / "hellaswag" / "train.jsonl"
        for path in needed.values():
            if not path.is_file():
                raise EvalDataError(
                    f"evaluation.data_dir {str(data_dir)!r} lacks {path.relative_to(data_dir)} needed by task "
                    f"{task!r}; it needs {', '.join(str(p.relative_to(data_dir)) for p in needed.values())}"
                )
        if task == "hellaswag" and num_fewshot > 0 and "train" not in needed:
            raise EvalDataError(
                f"evaluation.num_fewshot={num_fewshot} needs hellaswag/train.jsonl in {str(data_dir)!r}, which "
                "has only the validation split; use num_fewshot 0 for hellaswag"
            )
        for path in needed.values():
            check_jsonl(path)
        if num_fewshot > 0:
            check_enough_fewshot(task, needed[EVAL_TASKS[task].fewshot_split], num_fewshot)
        files[task] = {split: str(path.resolve()) for split, path in needed.items()}
    per_task = {t: sha256_json({s: sha256_file(Path(p)) for s, p in sp.items()}) for t, sp in sorted(files.items())}
    return EvalData(data_dir=data_dir.resolve(), fingerprint=sha256_json(per_task), files=files,
                    task_fingerprints=per_task)


def check_jsonl(path: Path) -> None:
    """Every line a JSON object, in UTF-8: a malformed line is found now, not after calibration and quantization
    (where it surfaced as nine tracebacks from the dataset loader)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise EvalDataError(f"evaluation data {str(path)!r} line {number} is not a JSON object: "
                                    f"{str(exc).splitlines()[0]}") from None
            if not isinstance(row, dict):
                raise EvalDataError(f"evaluation data {str(path)!r} line {number} is not a JSON object "
                                    f"(got {type(row).__name__})")


def check_enough_fewshot(task: str, fewshot_file: Path, num_fewshot: int) -> None:
    """lm-eval draws `num_fewshot` examples per document from one stratum's few-shot split (MMLU: the subject's
    5 dev questions); more than the smallest holds fails inside lm-eval after calibration and quantization."""
    strata = EVAL_TASKS[task].strata
    sizes = stratum_counts(fewshot_file, task)
    smallest = min(sorted(sizes), key=sizes.__getitem__, default=None)
    if smallest is None or sizes[smallest] < num_fewshot:
        held = 0 if smallest is None else sizes[smallest]
        where = f" ({strata} {smallest!r})" if strata and smallest is not None else ""
        raise EvalDataError(
            f"evaluation.num_fewshot={num_fewshot} is more than task {task!r} can draw: its few-shot split "
            f"{fewshot_file.name} holds {held} examples{where}; use num_fewshot {held} or less")


def mmlu_subjects(test_file: Path) -> list[str]:
    with test_file.open(encoding="utf-8") as handle:
        return sorted({json.loads(line)["subject"] for line in handle if line.strip()})


def materialize_mmlu(data: EvalData, cache_dir: Path) -> Path:
    """Per-subject copies `<cache>/<fingerprint>/mmlu/<subject>/{dev,test}.jsonl`, written once."""
    root = cache_dir / data.fingerprint[:16] / "mmlu"
    if (root / ".complete").is_file():
        return root
    rows: dict[str, dict[str, list[str]]] = {}
    for split, path in data.files["mmlu"].items():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    rows.setdefault(json.loads(line)["subject"], {}).setdefault(split, []).append(line)
    for subject, splits in rows.items():
        (root / subject).mkdir(parents=True, exist_ok=True)
        for split, lines in splits.items():
            (root / subject / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    (root / ".complete").write_text("")
    return root


def _override(task: str, data_files: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"task": task, "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": data_files}, **extra}


EVAL_GROUP = "enginewright"


def lm_eval_task_configs(data: EvalData, tasks: Sequence[str], cache_dir: Path, only: set[str] | None = None,
                         samplers: dict[str, type[Any]] | None = None) -> list[dict[str, Any]]:
    """`lm_eval.simple_evaluate(tasks=...)` argument: stock tasks, local data; `only` keeps just those lm-eval
    tasks (MMLU subjects without a document in a look are left out, not evaluated whole); `samplers` gives lm-eval
    tasks their few-shot sampler class (`fewshot_config.sampler`, tasks/fewshot.py) where the stock task has none.

    The overrides sit inside a group: lm-eval 0.4.13 merges a group member's dict into the registered
    task's YAML, whereas a top-level dict is taken as a whole new task without the stock prompts.
    """
    configs: list[dict[str, Any]] = []
    for task in tasks:
        files = data.files[task]
        if task == "mmlu":
            root = materialize_mmlu(data, cache_dir)
            for subject in mmlu_subjects(Path(files["test"])):
                subject_files = {s: str(root / subject / f"{s}.jsonl") for s in ("dev", "test")}
                configs.append(_override(f"mmlu_{subject}", subject_files))
        elif task == "hellaswag" and "train" not in files:
            configs.append(_override(task, files, training_split=None))
        else:
            configs.append(_override(task, files))
    if only is not None:
        configs = [c for c in configs if c["task"] in only]
    for config in configs:
        if samplers and config["task"] in samplers:
            config["fewshot_config"] = {"sampler": samplers[config["task"]]}
    return [{"group": EVAL_GROUP, "task": configs}]


def stratum_counts(split_file: Path, task: str) -> dict[str, int]:
    """Documents of one of `task`'s split files per stratum (one stratum, the task itself, where it has none)."""
    strata = EVAL_TASKS[task].strata
    sizes: dict[str, int] = {}
    with split_file.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                stratum = json.loads(line)[strata] if strata else task
                sizes[stratum] = sizes.get(stratum, 0) + 1
    return sizes


def stratum_sizes(data: EvalData, task: str) -> dict[str, int]:
    """Documents of `task`'s evaluated split per stratum."""
    return stratum_counts(Path(data.files[task][EVAL_TASKS[task].eval_split]), task)


def document_count(data: EvalData, task: str) -> int:
    return sum(stratum_sizes(data, task).values())


def document_order(data: EvalData, task: str, seed: int) -> list[tuple[str, int]]:
    """Every document of `task` as (lm-eval task, index in its evaluated split), in a seeded random order.

    Where the task has strata (MMLU's subjects, each its own lm-eval task), each stratum is shuffled on its own and
    the strata are interleaved in proportion to their sizes (document j of a stratum of size n sorts at
    (j + u)/n, u drawn once per stratum), so every prefix of the order is a stratified sample. lm-eval's
    `--samples` takes these indices per lm-eval task."""
    import numpy as np

    rng = np.random.default_rng([seed, *task.encode()])
    sizes = stratum_sizes(data, task)
    if EVAL_TASKS[task].strata is None:
        return [(task, int(i)) for i in rng.permutation(sizes[task])]
    keyed: list[tuple[float, str, int]] = []
    for stratum in sorted(sizes):
        n, offset = sizes[stratum], float(rng.random())
        keyed += [((rank + offset) / n, stratum, int(i)) for rank, i in enumerate(rng.permutation(n))]
    keyed.sort()
    return [(f"{task}_{stratum}", index) for _, stratum, index in keyed]


def document_clusters(data: EvalData, task: str, order: list[tuple[str, int]]) -> tuple[str, ...] | None:
    """The cluster of each document of `order` (the task table's `cluster` field), None for independent documents."""
    field_name = EVAL_TASKS[task].cluster
    if field_name is None:
        return None
    with Path(data.files[task][EVAL_TASKS[task].eval_split]).open(encoding="utf-8") as handle:
        values = [str(json.loads(line)[field_name]) for line in handle if line.strip()]
    return tuple(values[index] for _, index in order)


def task_family(lm_eval_task: str) -> str:
    """`mmlu_nutrition` → `mmlu`; other names are their own family."""
    return "mmlu" if lm_eval_task.startswith("mmlu_") else lm_eval_task


def _eval_data_change(inputs: dict[str, Any]) -> Any:
    data_dir = Path(inputs["data_dir"])
    if not data_dir.is_dir():
        return None
    files = [p for t in inputs["tasks"] for p in required_files(data_dir, t).values() if p.is_file()]
    return [[stat_fingerprint(p) for p in files], list(inputs["tasks"]), inputs["num_fewshot"]]


eval_data_task = prefect_task(name="eval-data", persist_result=True,
                              cache_policy=ChangeDetector(step="eval-data", key_fn=_eval_data_change))(check_eval_data)
