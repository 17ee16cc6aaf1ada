"""The accuracy gate: per task, a paired comparison of baseline and candidate on the same documents.

Verdicts: **pass** when the whole confidence interval of the accuracy difference lies above the allowed
drop, **fail** when it lies below, **inconclusive** when it straddles the threshold (with a rough number
of documents that would decide it). Report schema: enginewright.schemas.GateReport.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task

from enginewright.cache_policies import step_policy
from enginewright.errors import EnginewrightError
from enginewright.paired_stats import PairedComparison, compare_paired, samples_to_decide
from enginewright.schemas import GATE_REPORT_SCHEMA_VERSION, GateReport, GateTaskResult
from enginewright.spec import GateSpec
from enginewright.work_dir import WorkDir
from tasks.eval_data import PRIMARY_METRIC

if TYPE_CHECKING:
    from tasks.evaluate import EvalResult


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def join_records(
    baseline: list[dict[str, Any]], candidate: list[dict[str, Any]], task_name: str, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays aligned by (lm-eval task, doc_id), refusing pairs whose documents or prompts differ."""
    base = {(r["subtask"], r["doc_id"]): r for r in baseline if r["task"] == task_name}
    cand = {(r["subtask"], r["doc_id"]): r for r in candidate if r["task"] == task_name}
    if base.keys() != cand.keys():
        missing = sorted(base.keys() ^ cand.keys())[:3]
        raise EnginewrightError(f"task {task_name}: baseline and candidate evaluated different documents, e.g. {missing}")
    keys = sorted(base)
    for key in keys:
        for field in ("doc_hash", "prompt_hash"):
            if base[key][field] != cand[key][field]:
                raise EnginewrightError(f"task {task_name}: {field} differs for document {key}; the runs are not paired")
    return (np.array([base[k][metric] for k in keys], dtype=np.float64),
            np.array([cand[k][metric] for k in keys], dtype=np.float64))


def allowed_drop(max_drop_points: float | None, min_recovery: float | None, baseline_accuracy: float) -> float:
    """The stricter of the criteria, as a fraction of accuracy."""
    limits = []
    if max_drop_points is not None:
        limits.append(max_drop_points / 100)
    if min_recovery is not None:
        limits.append((1 - min_recovery) * baseline_accuracy)
    return min(limits)


def task_verdict(comparison: PairedComparison, allowed: float) -> str:
    if comparison.ci_low >= -allowed:
        return "pass"
    if comparison.ci_high < -allowed:
        return "fail"
    return "inconclusive"


def judge_task(task_name: str, baseline: list[dict], candidate: list[dict], spec: GateSpec) -> GateTaskResult:
    override = spec.tasks.get(task_name)  # type: ignore[call-overload]
    metric = (override.metric if override and override.metric else None) or PRIMARY_METRIC[task_name]
    base, cand = join_records(baseline, candidate, task_name, metric)
    cmp = compare_paired(base, cand, spec.bootstrap_iterations, spec.seed, spec.confidence)
    allowed = allowed_drop(*spec.criteria_for(task_name), cmp.baseline_accuracy)
    verdict = task_verdict(cmp, allowed)
    return GateTaskResult(
        task=task_name, metric=metric, n=cmp.n, baseline=cmp.baseline_accuracy, candidate=cmp.candidate_accuracy,
        difference_points=100 * cmp.difference, ci_low_points=100 * cmp.ci_low, ci_high_points=100 * cmp.ci_high,
        only_baseline_right=cmp.only_baseline_right, only_candidate_right=cmp.only_candidate_right,
        mcnemar_p=cmp.mcnemar_p, recovery=cmp.recovery, allowed_drop_points=100 * allowed, verdict=verdict,
        samples_to_decide=samples_to_decide(cmp, allowed, spec.confidence) if verdict == "inconclusive" else None,
    )


def overall_verdict(results: list[GateTaskResult]) -> str:
    verdicts = {r["verdict"] for r in results}
    return "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"


def gate_message(results: list[GateTaskResult], overall: str) -> str:
    def describe(r: GateTaskResult) -> str:
        return (f"{r['task']} {r['metric']} changed {r['difference_points']:+.2f} points "
                f"(CI {r['ci_low_points']:+.2f} to {r['ci_high_points']:+.2f}), allowed drop "
                f"{r['allowed_drop_points']:.2f}")

    deciding = [r for r in results if r["verdict"] == overall]
    if overall == "fail":
        return "gate failed: " + "; ".join(describe(r) for r in deciding)
    if overall == "inconclusive":
        return "gate inconclusive: " + "; ".join(
            f"{describe(r)}, ~{r['samples_to_decide'] or 'more than available'} documents would decide it"
            for r in deciding)
    return "gate passed: " + "; ".join(describe(r) for r in results)


def evaluate_gate(baseline_samples: Path, candidate_samples: Path, tasks: list[str], spec: GateSpec) -> GateReport:
    baseline, candidate = read_records(baseline_samples), read_records(candidate_samples)
    results = [judge_task(t, baseline, candidate, spec) for t in sorted(tasks)]
    overall = overall_verdict(results)
    return GateReport(schema_version=GATE_REPORT_SCHEMA_VERSION, overall=overall, confidence=spec.confidence,
                      bootstrap_iterations=spec.bootstrap_iterations, seed=spec.seed, tasks=results,
                      message=gate_message(results, overall))


def gate_markdown(report: GateReport) -> str:
    rows = "\n".join(
        f"| {r['task']} | {r['metric']} | {r['n']} | {100 * r['baseline']:.2f} | {100 * r['candidate']:.2f} | "
        f"{r['difference_points']:+.2f} [{r['ci_low_points']:+.2f}, {r['ci_high_points']:+.2f}] | "
        f"{r['mcnemar_p']:.3g} | {r['allowed_drop_points']:.2f} | **{r['verdict']}**"
        + (f" (~{r['samples_to_decide']} docs to decide)" if r["samples_to_decide"] else "") + " |"
        for r in report["tasks"]
    )
    return (f"## Accuracy gate: **{report['overall']}**\n\n{report['message']}\n\n"
            f"| task | metric | n | baseline % | candidate % | Δ points [{int(100 * report['confidence'])}% CI] | "
            f"McNemar p | allowed drop | verdict |\n|---|---|---|---|---|---|---|---|---|\n{rows}\n")


def gate_plot(report: GateReport, out_file: Path) -> Path:
    """Per task: baseline and candidate accuracy, the candidate's interval, and the lowest accepted accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["tasks"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(results), 3.6))
    x = np.arange(len(results))
    base = np.array([100 * r["baseline"] for r in results])
    cand = np.array([100 * r["candidate"] for r in results])
    low = base + np.array([r["ci_low_points"] for r in results])
    high = base + np.array([r["ci_high_points"] for r in results])
    ax.bar(x - 0.18, base, 0.36, label="baseline", color="#9aa5b1")
    ax.bar(x + 0.18, cand, 0.36, label="candidate", color="#3b82f6")
    ax.errorbar(x + 0.18, base + (cand - base), yerr=[cand - low, high - cand], fmt="none", ecolor="black",
                capsize=4, label=f"{int(100 * report['confidence'])}% CI (paired)")
    threshold = base - np.array([r["allowed_drop_points"] for r in results])
    ax.hlines(threshold, x - 0.4, x + 0.4, colors="#dc2626", linestyles="dashed", label="lowest accepted")
    ax.set_xticks(x, [f"{r['task']}\n{r['verdict']}" for r in results])
    ax.set_ylabel("accuracy, %")
    ax.set_title(f"accuracy gate: {report['overall']}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)
    return out_file


def write_gate_outputs(report: GateReport, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gate_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "gate_report.md").write_text(gate_markdown(report))
    return {"json": out_dir / "gate_report.json", "markdown": out_dir / "gate_report.md",
            "plot": gate_plot(report, out_dir / "gate_plot.png")}


@task(name="gate", cache_policy=step_policy("gate", "work", "baseline", "candidate", "tasks", "spec"),
      persist_result=True)
def gate_task(work: WorkDir, baseline: EvalResult, candidate: EvalResult, tasks: list[str], spec: GateSpec) -> GateReport:
    from prefect.artifacts import create_markdown_artifact

    report = evaluate_gate(baseline.samples_path, candidate.samples_path, tasks, spec)
    write_gate_outputs(report, work.gate)
    create_markdown_artifact(markdown=gate_markdown(report), key="accuracy-gate", description=report["message"])
    return report
