import json
from pathlib import Path

import numpy as np
import pytest

from enginewright.errors import EnginewrightError
from enginewright.spec import GateSpec
from tasks.gate import allowed_drop, evaluate_gate, gate_markdown, write_gate_outputs


def records(correct: list[int], task: str = "arc_easy", metric: str = "acc_norm", salt: str = "") -> list[dict]:
    return [{"task": task, "subtask": task, "doc_id": i, "doc_hash": f"d{i}", "prompt_hash": f"p{i}{salt}",
             "acc": float(c), metric: float(c)} for i, c in enumerate(correct)]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pair(tmp_path: Path, base: list[int], cand: list[int], task: str = "arc_easy") -> tuple[Path, Path]:
    return write(tmp_path / "b.jsonl", records(base, task)), write(tmp_path / "c.jsonl", records(cand, task))


def test_clear_drop_fails_with_task_drop_and_threshold(tmp_path: Path) -> None:
    base = [1] * 300 + [0] * 200
    cand = [0] * 60 + [1] * 240 + [0] * 200  # -12 points
    report = evaluate_gate(*pair(tmp_path, base, cand), ["arc_easy"], GateSpec(max_drop_points=2))
    assert report["overall"] == "fail"
    assert report["message"].startswith("gate failed: arc_easy acc_norm changed -12.00 points")
    assert "allowed drop 2.00" in report["message"]


def test_identical_results_pass(tmp_path: Path) -> None:
    base = [1, 0] * 100
    report = evaluate_gate(*pair(tmp_path, base, base), ["arc_easy"], GateSpec())
    assert report["overall"] == "pass" and report["tasks"][0]["mcnemar_p"] == 1.0


def test_small_sample_is_inconclusive_and_says_how_many_would_decide(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(80) < 0.5).astype(int).tolist()
    cand = [b if rng.random() > 0.15 else 1 - b for b in base]
    report = evaluate_gate(*pair(tmp_path, base, cand), ["arc_easy"], GateSpec(max_drop_points=1))
    row = report["tasks"][0]
    assert report["overall"] == "inconclusive" == row["verdict"]
    assert row["samples_to_decide"] and row["samples_to_decide"] > 80
    assert "documents would decide it" in report["message"]


def test_recovery_criterion_and_the_stricter_one_wins() -> None:
    assert allowed_drop(None, 0.99, 0.5) == pytest.approx(0.005)
    assert allowed_drop(1.0, 0.99, 0.5) == pytest.approx(0.005)
    assert allowed_drop(0.2, 0.99, 0.5) == pytest.approx(0.002)


def test_per_task_override_and_metric(tmp_path: Path) -> None:
    base = [1] * 100 + [0] * 100
    cand = [0] * 6 + [1] * 94 + [0] * 100  # -3 points
    spec = GateSpec.model_validate({"max_drop_points": 1, "tasks": {"arc_easy": {"max_drop_points": 50, "metric": "acc"}}})
    report = evaluate_gate(*pair(tmp_path, base, cand), ["arc_easy"], spec)
    assert report["tasks"][0]["metric"] == "acc" and report["tasks"][0]["allowed_drop_points"] == 50
    assert report["overall"] == "pass"


def test_unpaired_runs_are_refused(tmp_path: Path) -> None:
    b = write(tmp_path / "b.jsonl", records([1, 0, 1]))
    c = write(tmp_path / "c.jsonl", records([1, 0, 1], salt="x"))
    with pytest.raises(EnginewrightError, match="prompt_hash differs"):
        evaluate_gate(b, c, ["arc_easy"], GateSpec())
    c = write(tmp_path / "c.jsonl", records([1, 0]))
    with pytest.raises(EnginewrightError, match="different documents"):
        evaluate_gate(b, c, ["arc_easy"], GateSpec())


def test_gate_needs_a_criterion() -> None:
    with pytest.raises(ValueError, match="set gate.max_drop_points or gate.min_recovery"):
        GateSpec(max_drop_points=None)


def test_outputs_json_markdown_and_plot(tmp_path: Path) -> None:
    base = [1] * 50 + [0] * 50
    rows_b = records(base, "hellaswag") + records(base, "arc_easy")
    rows_c = records(base, "hellaswag") + records([0] * 10 + base[10:], "arc_easy")
    report = evaluate_gate(write(tmp_path / "b.jsonl", rows_b), write(tmp_path / "c.jsonl", rows_c),
                           ["hellaswag", "arc_easy"], GateSpec())
    files = write_gate_outputs(report, tmp_path / "out")
    assert json.loads(files["json"].read_text())["overall"] == report["overall"] == "fail"
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = gate_markdown(report)
    assert "| arc_easy | acc_norm | 100 |" in markdown and "**fail**" in markdown
