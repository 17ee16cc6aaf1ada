"""Compare the variants of a matrix build and recommend one by a stated policy.

Each variant is a finished `enginewright build` (its JSON report) or a failure (its exit code and last error
line). The comparison is one table and one plot: per task, the accuracy difference to the shared baseline
with its 95 % interval against the effective bits per weight (plain formats and AutoQuantize budgets on one axis),
and the runtime throughput where a GPU measured it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from enginewright.config.schemas import BuildReport
from enginewright.config.spec import BuildSpec
from enginewright.keys.hashing import sha256_json
from enginewright.serving.runtimes.tensorrt_llm import OUTPUT_THROUGHPUT

RECOMMENDED_ALIAS = "recommended"


class RecommendationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    objective: Literal["smallest", "fewest_bits", "most_accurate", "fastest"] = Field(
        default="smallest",
        description="smallest: the smallest bundle; fewest_bits: the fewest effective bits per weight (the smallest "
        "model that passes, plain formats and AutoQuantize budgets alike); most_accurate: the smallest mean accuracy "
        "drop; fastest: the highest measured TensorRT-LLM throughput (GPU workers only). Ties go to accuracy, then "
        "size.",
    )
    require: Literal["pass", "pass_or_inconclusive"] = Field(
        default="pass", description="Which gate verdicts a variant needs to be recommended."
    )


VariantStatus = Literal["registered", "gate failed", "refused", "failed"]


@dataclass
class VariantResult:
    format: str
    status: VariantStatus
    reason: str = ""
    # the registered build's report (--report-json, or the build deployment's artifact); empty otherwise
    report: BuildReport = field(default_factory=lambda: cast(BuildReport, {}))

    @property
    def verdict(self) -> str:
        """This run's gate verdict (under the matrix's plan)."""
        return self.report.get("gate", {}).get("overall", "-")

    @property
    def version_verdict(self) -> str:
        """The verdict the variant's version stands on: this run's, unless the matrix only evaluated an already
        registered version again (its verdict is then unchanged, and only it can earn an alias)."""
        return self.report.get("version_verdict") or self.verdict

    @property
    def note(self) -> str:
        return self.report.get("evaluated_again") or self.reason

    @property
    def bundle_bytes(self) -> int | None:
        return self.report.get("bundle_bytes")

    @property
    def effective_bits(self) -> float | None:
        return self.report.get("effective_bits")

    @property
    def mean_difference(self) -> float | None:
        rows = self.report.get("gate", {}).get("tasks", [])
        return sum(r["difference_points"] for r in rows) / len(rows) if rows else None

    @property
    def throughput(self) -> float | None:
        # trtllm-bench's report (enginewright.serving.runtimes.tensorrt_llm), GPU workers only
        return self.report.get("engine", {}).get("bench", {}).get(OUTPUT_THROUGHPUT)


def recommend(variants: list[VariantResult], policy: RecommendationPolicy) -> tuple[VariantResult | None, str]:
    """The chosen variant and the reason, in words; (None, why not) when no variant qualifies."""
    allowed = {"pass"} if policy.require == "pass" else {"pass", "inconclusive"}
    eligible = [v for v in variants if v.status == "registered" and v.version_verdict in allowed]
    if policy.objective == "fastest":
        eligible = [v for v in eligible if v.throughput is not None]
    if policy.objective == "fewest_bits":
        eligible = [v for v in eligible if v.effective_bits is not None]
    if not eligible:
        needs = {"fastest": " and a measured throughput", "fewest_bits": " and recorded effective bits"}.get(
            policy.objective, "")
        return None, f"no variant was registered with a gate verdict in {sorted(allowed)}{needs}"
    keys = {
        "smallest": lambda v: (v.bundle_bytes, -v.mean_difference),
        "fewest_bits": lambda v: (v.effective_bits, -v.mean_difference, v.bundle_bytes),
        "most_accurate": lambda v: (-v.mean_difference, v.bundle_bytes),
        "fastest": lambda v: (-v.throughput, -v.mean_difference, v.bundle_bytes),
    }
    chosen = min(eligible, key=keys[policy.objective])
    what = {"smallest": lambda: f"the smallest bundle ({(chosen.bundle_bytes or 0) / 1e6:.1f} MB)",
            "fewest_bits": lambda: f"the fewest effective bits ({chosen.effective_bits:.2f} per weight)",
            "most_accurate": lambda: f"the smallest mean accuracy change ({chosen.mean_difference:+.2f} points)",
            "fastest": lambda: f"the highest measured throughput ({chosen.throughput:.0f} tokens/s)"}[policy.objective]()
    return chosen, (f"{chosen.format}: {what} among the {len(eligible)} variant(s) whose gate verdict is "
                    f"{' or '.join(sorted(allowed))} (policy {policy.objective}, require {policy.require}); "
                    f"mean Δ {chosen.mean_difference:+.2f} points")


def comparison_markdown(variants: list[VariantResult], recommendation: str) -> str:
    tasks = sorted({r["task"] for v in variants for r in v.report.get("gate", {}).get("tasks", [])})
    head = "| variant | status | version | bundle MB | bits | " + " | ".join(f"{t} Δ points [95% CI]" for t in tasks) + \
        " | gate | tokens/s (TensorRT-LLM) | note |"
    lines = [head, "|" + "---|" * (9 + len(tasks) - 1)]
    for v in variants:
        by_task = {r["task"]: r for r in v.report.get("gate", {}).get("tasks", [])}
        cells = [f"{by_task[t]['difference_points']:+.2f} [{by_task[t]['ci_low_points']:+.1f}, "
                 f"{by_task[t]['ci_high_points']:+.1f}] {by_task[t]['verdict']}" if t in by_task else "-" for t in tasks]
        size = f"{v.bundle_bytes / 1e6:.1f}" if v.bundle_bytes else "-"
        bits = f"{v.effective_bits:.2f}" if v.effective_bits is not None else "-"
        speed = f"{v.throughput:.0f}" if v.throughput else "not measured (no GPU)"
        lines.append(f"| {v.format} | {v.status} | {v.report.get('version', '-')} | {size} | {bits} | " + " | ".join(cells)
                     + f" | {v.verdict} | {speed} | {v.note} |")
    return "\n".join(lines) + f"\n\n**Recommendation:** {recommendation}\n"


@dataclass(frozen=True)
class PlotPoint:
    """One variant on one task in the comparison plot."""

    task: str
    variant: str
    x: float  # effective bits, moved sideways when several variants share them
    difference: float
    low: float
    high: float
    verdict: str
    budget: bool  # an AutoQuantize budget (a triangle) rather than one format (a circle)


def plot_points(variants: list[VariantResult], spread: float = 0.12) -> list[PlotPoint]:
    """Every variant with recorded bits, per task. Variants with the same bits (FP8 and INT8-SQ are both 8) sit side
    by side around those bits instead of on one vertical line; a variant without bits (a report from before builds
    recorded them) stays in the table only."""
    bits = {v.format: v.effective_bits for v in variants if v.effective_bits is not None}
    placed = [v for v in variants if v.format in bits]
    points = []
    for v in placed:
        alike = [w.format for w in placed if bits[w.format] == bits[v.format]]
        x = bits[v.format] + spread * (alike.index(v.format) - (len(alike) - 1) / 2)
        for row in v.report.get("gate", {}).get("tasks", []):
            points.append(PlotPoint(row["task"], v.format, x, row["difference_points"], row["ci_low_points"],
                                    row["ci_high_points"], row["verdict"], bool(v.report.get("mix"))))
    return points


def comparison_plot(variants: list[VariantResult], out_file: Path) -> Path:
    """One panel per task, read like the build's gate plot: accuracy difference with its 95 % interval against
    effective bits per weight, coloured by verdict, the allowed drop as a dashed line, plain formats as circles and
    AutoQuantize budgets as triangles, a legend for both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from tasks.gate import VERDICT_COLOURS

    points = plot_points(variants)
    tasks = sorted({p.task for p in points}) or ["(no variant with recorded bits)"]
    drops = {row["task"]: row.get("allowed_drop_points") for v in variants
             for row in v.report.get("gate", {}).get("tasks", [])}
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1.2, 4.2), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for p in (p for p in points if p.task == task):
            colour = VERDICT_COLOURS.get(p.verdict, "#6b7280")
            ax.errorbar(p.x, p.difference, yerr=[[p.difference - p.low], [p.high - p.difference]],
                        fmt="^" if p.budget else "o", color=colour, capsize=3, markersize=7)
            ax.annotate(p.variant, (p.x, p.difference), fontsize=7, xytext=(5, 3), textcoords="offset points")
        if drops.get(task) is not None:
            ax.axhline(-drops[task], color="#111827", linestyle="--", linewidth=1.1)
        ax.axhline(0, color="#9ca3af", linewidth=0.8)
        ax.set_title(task)
        ax.set_xlabel("effective bits per weight")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("candidate − baseline, points (95% CI)")
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [Line2D([], [], color="#374151", marker="o", linestyle="", label="one format"),
                Line2D([], [], color="#374151", marker="^", linestyle="", label="AutoQuantize budget"),
                Line2D([], [], color="#111827", linestyle="--", label="allowed drop")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("matrix: accuracy against bits, per task", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=120)
    plt.close(fig)
    return out_file


def matrix_dir(builds_dir: Path, spec: BuildSpec, formats: list[str]) -> Path:
    """Where one matrix (a spec and its list of formats) keeps its shared baseline, variant reports and plot."""
    return builds_dir / f"matrix-{sha256_json([spec.model_dump(mode='json'), formats])[:16]}"
