import json
from pathlib import Path

import numpy as np
import pytest

from enginewright.config.spec import EvaluationSpec, GateSpec
from enginewright.errors import EnginewrightError
from enginewright.gate.gate_decision import TaskPlan, allowed_drop, tie_rate
from tasks.gate import evaluate_gate, gate_markdown, write_gate_outputs

EVAL = EvaluationSpec(data_dir=Path("."))


def records(correct: list[int], task: str = "arc_easy", metric: str = "acc_norm", salt: str = "") -> list[dict]:
    return [{"task": task, "subtask": task, "doc_id": i, "position": i, "doc_hash": f"d{i}",
             "prompt_hash": f"p{i}{salt}", "acc": float(c), metric: float(c), "loglikelihoods": [-1.0, -2.0]}
            for i, c in enumerate(correct)]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pair(tmp_path: Path, base: list[int], cand: list[int], task: str = "arc_easy") -> tuple[Path, Path]:
    return write(tmp_path / "b.jsonl", records(base, task)), write(tmp_path / "c.jsonl", records(cand, task))


def one_look(*tasks_and_sizes: tuple[str, int]) -> dict[str, TaskPlan]:
    return {t: TaskPlan(t, (n,), n) for t, n in tasks_and_sizes}


def test_clear_drop_fails_with_task_drop_and_threshold(tmp_path: Path) -> None:
    base = [1] * 300 + [0] * 200
    cand = [0] * 60 + [1] * 240 + [0] * 200  # -12 points
    report = evaluate_gate(*pair(tmp_path, base, cand), one_look(("arc_easy", 500)), GateSpec(max_drop_points=2), EVAL)
    assert report["overall"] == "fail"
    assert report["message"].startswith("gate failed: arc_easy acc_norm changed -12.00 points")
    assert "allowed drop 2.00" in report["message"]
    assert report["tasks"][0]["p_noninferiority"] > 0.5


def test_identical_results_pass_with_an_interval_that_has_a_width(tmp_path: Path) -> None:
    base = [1, 0] * 400
    report = evaluate_gate(*pair(tmp_path, base, base), one_look(("arc_easy", 800)), GateSpec(), EVAL)
    row = report["tasks"][0]
    assert report["overall"] == "pass" and row["mcnemar_p"] == 1.0
    assert row["ci_low_points"] < 0 < row["ci_high_points"]  # no discordant pair is still only 800 documents
    assert row["p_noninferiority"] <= row["alpha_at_look"] == pytest.approx(0.025)


def test_a_small_sample_is_inconclusive_and_says_what_80_percent_power_needs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(80) < 0.5).astype(int).tolist()
    cand = [b if rng.random() > 0.15 else 1 - b for b in base]
    report = evaluate_gate(*pair(tmp_path, base, cand), one_look(("arc_easy", 80)), GateSpec(max_drop_points=1), EVAL)
    row = report["tasks"][0]
    assert report["overall"] == "inconclusive" == row["verdict"]
    assert row["documents_needed"] > 1000
    assert f"80 % power needs ~{row['documents_needed']} documents (80 available)" in report["message"]


def test_the_gate_reads_the_look_that_decided(tmp_path: Path) -> None:
    base = [1, 0] * 500
    plans = {"arc_easy": TaskPlan("arc_easy", (250, 500, 750, 1000), 1000)}
    report = evaluate_gate(*pair(tmp_path, base[:500], base[:500]), plans, GateSpec(), EVAL)
    row = report["tasks"][0]
    assert (row["verdict"], row["look"], row["n"], row["looks_planned"]) == ("pass", 2, 500, 4)
    assert row["pass_bound"] > 1.96  # an interim look costs: its bound is above the fixed-n one


def test_recovery_criterion_and_the_stricter_one_wins() -> None:
    assert allowed_drop(None, 0.99, 0.5) == pytest.approx(0.005)
    assert allowed_drop(1.0, 0.99, 0.5) == pytest.approx(0.005)
    assert allowed_drop(0.2, 0.99, 0.5) == pytest.approx(0.002)


def test_per_task_override_and_metric(tmp_path: Path) -> None:
    base = [1] * 100 + [0] * 100
    cand = [0] * 6 + [1] * 94 + [0] * 100  # -3 points
    spec = GateSpec.model_validate({"max_drop_points": 1, "tasks": {"arc_easy": {"max_drop_points": 50, "metric": "acc"}}})
    report = evaluate_gate(*pair(tmp_path, base, cand), one_look(("arc_easy", 200)), spec, EVAL)
    assert report["tasks"][0]["metric"] == "acc" and report["tasks"][0]["allowed_drop_points"] == 50
    assert report["overall"] == "pass"


def test_family_false_fail_splits_alpha_over_the_tasks(tmp_path: Path) -> None:
    base = [1] * 50 + [0] * 50
    rows = records(base, "hellaswag") + records(base, "arc_easy")
    b, c = write(tmp_path / "b.jsonl", rows), write(tmp_path / "c.jsonl", rows)
    report = evaluate_gate(b, c, one_look(("hellaswag", 100), ("arc_easy", 100)),
                           GateSpec(family_false_fail=0.05), EVAL)
    assert report["alpha_fail"] == pytest.approx(0.05 / 2) and report["alpha_pass"] == pytest.approx(0.025)
    report = evaluate_gate(b, c, one_look(("hellaswag", 100), ("arc_easy", 100)),
                           GateSpec(family_false_fail=0.02), EVAL)
    assert report["alpha_fail"] == pytest.approx(0.01)


def test_unpaired_or_unordered_runs_are_refused(tmp_path: Path) -> None:
    b = write(tmp_path / "b.jsonl", records([1, 0, 1]))
    c = write(tmp_path / "c.jsonl", records([1, 0, 1], salt="x"))
    plans = one_look(("arc_easy", 3))
    with pytest.raises(EnginewrightError, match="prompt_hash differs"):
        evaluate_gate(b, c, plans, GateSpec(), EVAL)
    c = write(tmp_path / "c.jsonl", records([1, 0]))
    with pytest.raises(EnginewrightError, match="different documents"):
        evaluate_gate(b, c, plans, GateSpec(), EVAL)
    shuffled = records([1, 0, 1])
    shuffled[0]["position"], shuffled[1]["position"] = 1, 0
    c = write(tmp_path / "c.jsonl", shuffled)
    with pytest.raises(EnginewrightError, match="not one sequence"):
        evaluate_gate(b, c, plans, GateSpec(), EVAL)


def test_gate_needs_a_criterion() -> None:
    with pytest.raises(ValueError, match="set gate.max_drop_points or gate.min_recovery"):
        GateSpec(max_drop_points=None)


def test_tie_rate_counts_exact_ties_of_the_best_choice() -> None:
    rows = [{"loglikelihoods": [-1.0, -1.0, -3.0]}, {"loglikelihoods": [-1.0, -2.0]}, {"loglikelihoods": [-4.0, -4.0]}]
    assert tie_rate(rows) == pytest.approx(2 / 3)
    rows[0]["loglikelihoods"] = [-1.0, -3.0, -3.0]  # a tie below the best choice decides nothing
    assert tie_rate(rows) == pytest.approx(1 / 3)


def test_outputs_json_markdown_and_plot(tmp_path: Path) -> None:
    base = [1] * 50 + [0] * 50
    rows_b = records(base, "hellaswag") + records(base, "arc_easy")
    rows_c = records(base, "hellaswag") + records([0] * 10 + base[10:], "arc_easy")
    report = evaluate_gate(write(tmp_path / "b.jsonl", rows_b), write(tmp_path / "c.jsonl", rows_c),
                           one_look(("hellaswag", 100), ("arc_easy", 100)), GateSpec(), EVAL)
    files = write_gate_outputs(report, tmp_path / "out")
    assert json.loads(files["json"].read_text())["overall"] == report["overall"] == "fail"
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = gate_markdown(report)
    assert "| arc_easy | acc_norm | 100 of 100 (look 1/1) |" in markdown and "**fail**" in markdown


def test_a_clustered_task_is_judged_with_the_cluster_robust_variance_and_says_so(tmp_path: Path) -> None:
    """HellaSwag's documents come in clusters (endings of one source): the same records whose discordant pairs come
    four at a time from one cluster pass when read as independent and are not shown non-inferior once the clusters
    are known; the report names the clustering and the design effect."""
    rng = np.random.default_rng(5)
    n = 800
    base = (rng.random(n) < 0.5).astype(int)
    cand = base.copy()
    chosen = rng.choice(np.arange(0, n, 4), size=30, replace=False)  # 30 clusters whose four documents move together
    for start in chosen[:13]:  # the candidate loses a whole cluster
        base[start:start + 4], cand[start:start + 4] = 1, 0
    for start in chosen[13:]:  # or gains one
        base[start:start + 4], cand[start:start + 4] = 0, 1
    labels = tuple(str(i // 4) for i in range(n))
    files = pair(tmp_path, base.tolist(), cand.tolist(), "hellaswag")
    spec = GateSpec(max_drop_points=2)
    independent = evaluate_gate(*files, {"hellaswag": TaskPlan("hellaswag", (n,), n)}, spec, EVAL)["tasks"][0]
    clustered = evaluate_gate(*files, {"hellaswag": TaskPlan("hellaswag", (n,), n, labels)}, spec, EVAL)["tasks"][0]
    assert clustered["design_effect"] > 2 and clustered["clusters"] == 200
    assert clustered["clustered_by"] == "source_id" and independent.get("clustered_by") is None
    assert clustered["ci_low_points"] < independent["ci_low_points"]  # a wider interval for the same records
    assert independent["verdict"] == "pass" and clustered["verdict"] == "inconclusive"
    report = evaluate_gate(*files, {"hellaswag": TaskPlan("hellaswag", (n,), n, labels)}, spec, EVAL)
    assert "documents clustered by source_id (200 clusters in 800 documents)" in gate_markdown(report)
