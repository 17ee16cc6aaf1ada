"""The accuracy gate: per task, a non-inferiority test of candidate against baseline on the same documents.

Per task, in its seeded sequence order: Tango's score statistic of the paired difference at Δ = −allowed drop,
against O'Brien–Fleming group-sequential boundaries at each planned look (enginewright.gate.paired_stats,
enginewright.gate.gate_decision). **pass** when the drop is shown smaller than allowed, **fail** when shown larger,
**inconclusive** when the plan ended first. Report schema: enginewright.config.schemas.GateReport.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from prefect import get_run_logger, task

from enginewright.config.eval_tasks import EVAL_TASKS
from enginewright.config.schemas import (
    GATE_REPORT_SCHEMA_VERSION,
    CandidateRuntimeDoc,
    GateReport,
    GateTaskResult,
)
from enginewright.config.spec import EvaluationSpec, GateSpec
from enginewright.gate.gate_decision import TaskPlan, alphas, decide, metric_of, paired_sequence, tie_rate
from enginewright.gate.paired_stats import documents_for_power, mcnemar_exact_p, tango_bounds
from enginewright.keys.cache_policies import step_policy
from enginewright.keys.work_dir import WorkDir
from tasks.evaluate import SIMULATED, Evaluation, read_records

METHOD = ("non-inferiority per task: Tango's score statistic of the paired difference, group-sequential with "
          "Lan-DeMets O'Brien-Fleming alpha spending over the planned looks")


def judge_task(task_name: str, baseline: list[dict], candidate: list[dict], plan: TaskPlan, spec: GateSpec,
               task_count: int) -> GateTaskResult:
    metric = metric_of(task_name, spec)
    base, cand, base_records, cand_records = paired_sequence(baseline, candidate, task_name, metric)
    decided = decide(base, cand, plan, spec, task_count)
    if decided is None:
        raise ValueError(f"task {task_name}: {base.size} documents do not reach the plan's first look "
                         f"({plan.looks[0]})")
    d, counts = decided.decision, decided.counts
    low, high = tango_bounds(counts, d.pass_bound, d.fail_bound)
    base_acc = float(base[:counts.n].mean())
    cand_acc = float(cand[:counts.n].mean())
    alpha_pass, _ = alphas(spec, task_count)
    return GateTaskResult(
        task=task_name, metric=metric, n=counts.n, documents_planned=plan.planned,
        documents_available=plan.available, look=d.look, looks_planned=len(plan.looks), baseline=base_acc,
        candidate=cand_acc, difference_points=100 * (cand_acc - base_acc), ci_low_points=100 * low,
        ci_high_points=100 * high, z=d.z, pass_bound=d.pass_bound, fail_bound=d.fail_bound,
        p_noninferiority=1 - NormalDist().cdf(d.z), alpha_at_look=1 - NormalDist().cdf(d.pass_bound),
        only_baseline_right=counts.only_baseline_right, only_candidate_right=counts.only_candidate_right,
        mcnemar_p=mcnemar_exact_p(counts.only_baseline_right, counts.only_candidate_right),
        recovery=cand_acc / base_acc if base_acc > 0 else None, allowed_drop_points=100 * decided.allowed,
        verdict=d.verdict,
        documents_needed=documents_for_power(max(counts.discordance, 1 / counts.n), decided.allowed, alpha_pass)
        if decided.allowed > 0 else plan.available,
        tie_rate_baseline=tie_rate(base_records[:counts.n]), tie_rate_candidate=tie_rate(cand_records[:counts.n]),
        clustered_by=EVAL_TASKS[task_name].cluster if plan.clusters else None, clusters=counts.clusters,
        design_effect=counts.design_effect,
    )


def overall_verdict(results: list[GateTaskResult]) -> str:
    verdicts = {r["verdict"] for r in results}
    return "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"


def gate_message(results: list[GateTaskResult], overall: str) -> str:
    def describe(r: GateTaskResult) -> str:
        return (f"{r['task']} {r['metric']} changed {r['difference_points']:+.2f} points "
                f"(CI {r['ci_low_points']:+.2f} to {r['ci_high_points']:+.2f}, {r['n']} documents), allowed drop "
                f"{r['allowed_drop_points']:.2f}")

    deciding = [r for r in results if r["verdict"] == overall]
    if overall == "fail":
        return "gate failed: " + "; ".join(describe(r) for r in deciding)
    if overall == "inconclusive":
        return "gate inconclusive: " + "; ".join(
            f"{describe(r)}; 80 % power needs ~{r['documents_needed']} documents"
            + (f" ({r['documents_available']} available)" if r["documents_needed"] > r["documents_available"] else "")
            for r in deciding)
    return "gate passed: " + "; ".join(describe(r) for r in results)


def runtime_section(runtime: dict[str, Any] | None, agreement_min: float) -> CandidateRuntimeDoc:
    """Which runtime computed the candidate and, where TensorRT-LLM did, how often it agreed with the simulated one."""
    runtime = runtime or SIMULATED.record()
    agreement = runtime.get("agreement")
    low = sorted(t for t, a in (agreement or {}).items() if not a["share"] >= agreement_min)
    return CandidateRuntimeDoc(runtime=runtime["runtime"], reason=runtime["reason"], version=runtime.get("version"),
                               agreement=agreement, agreement_min=agreement_min, agreement_low=low)


def evaluate_gate(baseline_samples: Path, candidate_samples: Path, plans: dict[str, TaskPlan], spec: GateSpec,
                  evaluation: EvaluationSpec, runtime: dict[str, Any] | None = None) -> GateReport:
    baseline, candidate = read_records(baseline_samples), read_records(candidate_samples)
    results = [judge_task(t, baseline, candidate, plans[t], spec, len(plans)) for t in sorted(plans)]
    overall = overall_verdict(results)
    alpha_pass, alpha_fail = alphas(spec, len(plans))
    return GateReport(schema_version=GATE_REPORT_SCHEMA_VERSION, overall=overall, method=METHOD,
                      confidence=spec.confidence, alpha_pass=alpha_pass, alpha_fail=alpha_fail,
                      sample_seed=evaluation.sample_seed, look_size=evaluation.look_size, tasks=results,
                      message=gate_message(results, overall),
                      candidate_runtime=runtime_section(runtime, evaluation.runtime_agreement_min))


def runtime_markdown(section: CandidateRuntimeDoc) -> str:
    line = f"Candidate evaluated by **{section['runtime']}**: {section['reason']}."
    if section["agreement"]:
        shares = ", ".join(f"{t} {100 * a['share']:.1f} % of {a['n']}" for t, a in sorted(section["agreement"].items()))
        line += (f" Same answer as the simulated candidate: {shares} (warn below "
                 f"{100 * section['agreement_min']:.0f} %" + (f"; low: {', '.join(section['agreement_low'])}"
                                                              if section["agreement_low"] else "") + ").")
    return line


def gate_markdown(report: GateReport) -> str:
    rows = "\n".join(
        f"| {r['task']} | {r['metric']} | {r['n']} of {r['documents_planned']} (look {r['look']}/"
        f"{r['looks_planned']}) | {100 * r['baseline']:.2f} | {100 * r['candidate']:.2f} | "
        f"{r['difference_points']:+.2f} [{r['ci_low_points']:+.2f}, {r['ci_high_points']:+.2f}] | "
        f"−{r['allowed_drop_points']:.2f} | {r['p_noninferiority']:.3g} (≤ {r['alpha_at_look']:.3g}) | "
        f"**{r['verdict']}** |"
        for r in report["tasks"]
    )
    clustered = "".join(
        f"{r['task']}: documents clustered by {r['clustered_by']} ({r['clusters']} clusters in {r['n']} documents); "
        f"the statistic's variance is cluster-robust, {r['design_effect']:.2f} × the independent one.\n\n"
        for r in report["tasks"] if r.get("clustered_by"))
    return (f"## Accuracy gate: **{report['overall']}**\n\n{report['message']}\n\n"
            f"| task | metric | documents | baseline % | candidate % | Δ points [interval] | allowed | "
            f"p non-inferiority (pass at) | verdict |\n|---|---|---|---|---|---|---|---|---|\n{rows}\n\n"
            f"{report['method']}; each task's pass test at α = {report['alpha_pass']:.3g}, fail test at "
            f"α = {report['alpha_fail']:.3g}.\n\n{clustered}{runtime_markdown(report['candidate_runtime'])}\n")


VERDICT_COLOURS = {"pass": "#16a34a", "fail": "#dc2626", "inconclusive": "#d97706"}


def gate_plot(report: GateReport, out_file: Path) -> Path:
    """A non-inferiority forest plot: per task the difference with its interval against the allowed drop,
    coloured by verdict, accuracies as labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["tasks"]
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.75 * len(results)))
    y = np.arange(len(results))[::-1]
    for row, r in zip(y, results, strict=True):
        colour = VERDICT_COLOURS.get(r["verdict"], "#6b7280")
        ax.plot([r["ci_low_points"], r["ci_high_points"]], [row, row], color=colour, linewidth=3,
                solid_capstyle="butt")
        ax.plot([r["difference_points"]], [row], "o", color=colour, markersize=8)
        ax.plot([-r["allowed_drop_points"]] * 2, [row - 0.35, row + 0.35], color="#111827", linestyle="--",
                linewidth=1.2)
        ax.annotate(f"{100 * r['baseline']:.1f}% → {100 * r['candidate']:.1f}%  ({r['n']} docs)  {r['verdict']}",
                    (r["ci_high_points"], row), xytext=(8, 0), textcoords="offset points", va="center", fontsize=8,
                    color=colour)
    ax.axvline(0, color="#9ca3af", linewidth=0.8)
    ax.set_yticks(y, [r["task"] for r in results])
    ax.set_ylim(-0.7, len(results) - 0.3)
    lows = [min(r["ci_low_points"], -r["allowed_drop_points"]) for r in results]
    highs = [r["ci_high_points"] for r in results]
    span = max(highs) - min(lows)
    ax.set_xlim(min(lows) - 0.1 * span, max(highs) + 0.6 * span)
    ax.set_xlabel("candidate − baseline, accuracy points (interval; dashed: the allowed drop)")
    ax.set_title(f"accuracy gate: {report['overall']}", loc="left")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_file, dpi=120)
    plt.close(fig)
    return out_file


def write_gate_outputs(report: GateReport, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gate_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "gate_report.md").write_text(gate_markdown(report))
    return {"json": out_dir / "gate_report.json", "markdown": out_dir / "gate_report.md",
            "plot": gate_plot(report, out_dir / "gate_plot.png")}


@task(name="gate", cache_policy=step_policy("gate", "work", "evaluation", "spec", "evaluation_spec"),
      persist_result=True)
def gate_task(work: WorkDir, evaluation: Evaluation, spec: GateSpec, evaluation_spec: EvaluationSpec) -> GateReport:
    from prefect.artifacts import create_markdown_artifact

    report = evaluate_gate(evaluation.baseline.samples_path, evaluation.candidate.samples_path, evaluation.plans, spec,
                           evaluation_spec, evaluation.runtime)
    if report["candidate_runtime"]["agreement_low"]:
        get_run_logger().warning(runtime_markdown(report["candidate_runtime"]))
    write_gate_outputs(report, work.gate)
    create_markdown_artifact(markdown=gate_markdown(report), key="accuracy-gate", description=report["message"])
    return report
