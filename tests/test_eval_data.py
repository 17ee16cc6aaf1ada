import shutil
from pathlib import Path

import pytest

from enginewright.config.eval_tasks import EVAL_TASK_NAMES, EVAL_TASKS
from enginewright.errors import EvalDataError
from tasks.eval_data import EVAL_GROUP, check_eval_data, document_order, lm_eval_task_configs


def test_missing_file_is_named_with_what_is_needed(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "eval"
    shutil.copytree(shared_data / "eval" / "arc_easy", data / "arc_easy")
    (data / "arc_easy" / "test.jsonl").unlink()
    with pytest.raises(EvalDataError, match="lacks arc_easy/test.jsonl needed by task 'arc_easy'; it needs arc_easy/train.jsonl"):
        check_eval_data(data, ["arc_easy"], 0)


def test_data_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="is not a directory"):
        check_eval_data(tmp_path / "nope", ["arc_easy"], 0)


def test_hellaswag_few_shot_needs_a_train_split(shared_data: Path) -> None:
    with pytest.raises(EvalDataError, match="num_fewshot=2 needs hellaswag/train.jsonl"):
        check_eval_data(shared_data / "eval", ["hellaswag"], 2)


def test_fingerprint_follows_content(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "eval"
    shutil.copytree(shared_data / "eval" / "hellaswag", data / "hellaswag")
    first = check_eval_data(data, ["hellaswag"], 0).fingerprint
    assert first == check_eval_data(shared_data / "eval", ["hellaswag"], 0).fingerprint
    with (data / "hellaswag" / "validation.jsonl").open("a") as handle:
        handle.write("\n")
    assert check_eval_data(data, ["hellaswag"], 0).fingerprint != first


def test_stock_task_definitions_read_local_data(shared_data: Path, tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    data = check_eval_data(shared_data / "eval", ["hellaswag", "arc_challenge", "mmlu"], 0)
    loaded = TaskManager().load(lm_eval_task_configs(data, ["hellaswag", "arc_challenge", "mmlu"], tmp_path))
    tasks = loaded["tasks"]
    assert loaded["group_map"][EVAL_GROUP][:2] == ["hellaswag", "arc_challenge"]
    hellaswag = tasks["hellaswag"]
    first = hellaswag.eval_docs[0]
    # The stock preprocessing (lm_eval/tasks/hellaswag/utils.py) ran on our local copy.
    assert hellaswag.doc_to_text(first) == "Roof shingle removal: A man is sitting on a roof. He"
    assert len(hellaswag.eval_docs) == 800
    assert len(tasks["arc_challenge"].eval_docs) == 938
    mmlu = [name for name in tasks if name.startswith("mmlu_")]
    assert len(mmlu) == 57
    assert sum(len(tasks[n].eval_docs) for n in mmlu) == 11280
    assert tasks["mmlu_nutrition"].doc_to_text(tasks["mmlu_nutrition"].eval_docs[0]).endswith("\nAnswer:")


@pytest.mark.parametrize("task", EVAL_TASK_NAMES)
def test_every_task_row_runs_through_data_check_configs_and_order(task: str, shared_data: Path, tmp_path: Path) -> None:
    """One row of enginewright.config.eval_tasks is all a task needs: its files checked, lm-eval's stock task pointed at them,
    and a seeded order over exactly the documents lm-eval evaluates."""
    from lm_eval.tasks import TaskManager

    data = check_eval_data(shared_data / "eval", [task], 0)
    loaded = TaskManager().load(lm_eval_task_configs(data, [task], tmp_path))["tasks"]
    sizes = {name: len(t.eval_docs) for name, t in loaded.items() if hasattr(t, "eval_docs")}
    order = document_order(data, task, seed=0)
    assert len(order) == len(set(order)) == sum(sizes.values())
    assert all(0 <= index < sizes[subtask] for subtask, index in order)
    assert document_order(data, task, seed=0) == order != document_order(data, task, seed=1)
    assert EVAL_TASKS[task].metric in ("acc", "acc_norm")


def test_mmlu_order_is_stratified_by_subject(shared_data: Path) -> None:
    data = check_eval_data(shared_data / "eval", ["mmlu"], 0)
    order = document_order(data, "mmlu", seed=0)
    totals: dict[str, int] = {}
    for subtask, _ in order:
        totals[subtask] = totals.get(subtask, 0) + 1
    first = {s: 0 for s in totals}
    for subtask, _ in order[:1128]:  # a tenth of the documents
        first[subtask] += 1
    for subject, total in totals.items():  # each subject's share of every prefix is its share of the whole, ±1
        assert abs(first[subject] - total / 10) <= 1, subject


def test_only_keeps_the_lm_eval_tasks_named(shared_data: Path, tmp_path: Path) -> None:
    data = check_eval_data(shared_data / "eval", ["mmlu"], 0)
    configs = lm_eval_task_configs(data, ["mmlu"], tmp_path, only={"mmlu_nutrition", "mmlu_virology"})
    assert sorted(c["task"] for c in configs[0]["task"]) == ["mmlu_nutrition", "mmlu_virology"]
