"""The matrix comparison's recommendation policy, on hand-made variant reports."""

from pathlib import Path

from tasks.compare import (
    RecommendationPolicy,
    VariantResult,
    comparison_markdown,
    comparison_plot,
    plot_points,
    recommend,
)
from tasks.trtllm_build import bench_metrics


def variant(fmt: str, verdict: str, size_mb: float, diffs: list[float], throughput: float | None = None,
            status: str = "registered", bits: float | None = None) -> VariantResult:
    tasks = [{"task": f"t{i}", "difference_points": d, "ci_low_points": d - 1, "ci_high_points": d + 1,
              "verdict": verdict, "allowed_drop_points": 1.0} for i, d in enumerate(diffs)]
    # As the lane records it: bench_metrics over a report with trtllm-bench's real performance key.
    engine = {"bench": bench_metrics({"performance": {"system_output_throughput_tok_s": throughput}})} if throughput else {}
    return VariantResult(fmt, status, report={"gate": {"overall": verdict, "tasks": tasks}, "version": fmt[-1],
                                              "bundle_bytes": int(size_mb * 1e6), "engine": engine,
                                              "effective_bits": bits, "mix": {"budget": bits} if "auto" in fmt else None})


VARIANTS = [
    variant("fp8-1", "pass", 160, [-0.2, -0.4], throughput=900, bits=8),
    variant("int4-2", "pass", 90, [-0.9, -0.7], throughput=1200, bits=4),
    variant("w4a8-3", "inconclusive", 80, [-0.1, 0.0], bits=4),
    variant("sq-4", "fail", 150, [-5.0, -3.0], bits=8),
    VariantResult("nvfp4", "refused", reason="needs compute capability 10.0+"),
]


def test_default_policy_picks_the_smallest_bundle_that_passed() -> None:
    chosen, reason = recommend(VARIANTS, RecommendationPolicy())
    assert chosen.format == "int4-2"
    assert reason.startswith("int4-2: the smallest bundle (90.0 MB) among the 2 variant(s) whose gate verdict is pass")


def test_policies_change_the_choice() -> None:
    assert recommend(VARIANTS, RecommendationPolicy(objective="most_accurate"))[0].format == "fp8-1"
    assert recommend(VARIANTS, RecommendationPolicy(objective="fastest"))[0].format == "int4-2"
    assert recommend(VARIANTS, RecommendationPolicy(require="pass_or_inconclusive"))[0].format == "w4a8-3"
    assert recommend(VARIANTS, RecommendationPolicy(objective="most_accurate",
                                                    require="pass_or_inconclusive"))[0].format == "w4a8-3"


def test_fewest_bits_picks_the_smallest_model_that_passed_among_formats_and_budgets() -> None:
    """An AutoQuantize budget that passed with fewer bits beats a plain format's bigger bundle; one that failed or
    exceeds another's bits does not; a tie in bits goes to accuracy."""
    budgets = [variant("auto-4.8", "pass", 100, [-1.5, -1.0], bits=4.79),
               variant("auto-4.2", "fail", 95, [-4.0, -3.5], bits=4.2),
               variant("auto-6.0", "pass", 120, [-0.3, -0.2], bits=5.98)]
    plain = [variant("int4-2", "pass", 90, [-0.9, -0.7], bits=4.5), variant("fp8-1", "pass", 160, [-0.2], bits=8)]
    chosen, reason = recommend(plain + budgets, RecommendationPolicy(objective="fewest_bits"))
    assert chosen.format == "int4-2" and reason.startswith("int4-2: the fewest effective bits (4.50 per weight)")
    chosen, _ = recommend(plain[1:] + budgets, RecommendationPolicy(objective="fewest_bits"))
    assert chosen.format == "auto-4.8"  # a smaller model than fp8 that passed; auto-4.2 failed
    tie = variant("auto-4.79b", "pass", 100, [-0.5, -0.5], bits=4.79)
    assert recommend(budgets + [tie], RecommendationPolicy(objective="fewest_bits"))[0].format == "auto-4.79b"
    chosen, reason = recommend([variant("old-1", "pass", 10, [0.0])], RecommendationPolicy(objective="fewest_bits"))
    assert chosen is None and reason.endswith("and recorded effective bits")


def test_no_qualifying_variant_means_no_recommendation_and_says_why() -> None:
    chosen, reason = recommend(VARIANTS[2:], RecommendationPolicy())
    assert chosen is None and reason == "no variant was registered with a gate verdict in ['pass']"
    chosen, reason = recommend([VARIANTS[2]], RecommendationPolicy(objective="fastest", require="pass_or_inconclusive"))
    assert chosen is None and reason.endswith("and a measured throughput")


def test_the_table_shows_every_variant_with_its_reason_and_the_plot_is_written(tmp_path: Path) -> None:
    table = comparison_markdown(VARIANTS, "int4-2 because")
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == ["fp8-1", "int4-2", "w4a8-3", "sq-4", "nvfp4"]
    assert "| nvfp4 | refused | - | - | - | - | - | - | not measured (no GPU) | needs compute capability 10.0+ |" in table
    assert "| int4-2 | registered | 2 | 90.0 | 4.00 | " in table
    assert "-0.90 [-1.9, +0.1] pass" in table and table.endswith("**Recommendation:** int4-2 because\n")
    assert comparison_plot(VARIANTS, tmp_path / "c.png").stat().st_size > 10_000


def test_the_plot_puts_variants_of_equal_bits_side_by_side_with_their_verdicts() -> None:
    """FP8 and INT8-SQ both have 8 bits: on one vertical line their intervals hid each other (a new user's report)."""
    points = plot_points(VARIANTS)
    on_t0 = {p.variant: p for p in points if p.task == "t0"}
    assert set(on_t0) == {"fp8-1", "int4-2", "w4a8-3", "sq-4"}  # nvfp4 has no bits: table only
    assert on_t0["fp8-1"].x != on_t0["sq-4"].x and abs(on_t0["fp8-1"].x - 8) < 0.2 and abs(on_t0["sq-4"].x - 8) < 0.2
    assert on_t0["int4-2"].x != on_t0["w4a8-3"].x
    assert {v: p.verdict for v, p in on_t0.items()} == {"fp8-1": "pass", "int4-2": "pass", "w4a8-3": "inconclusive",
                                                        "sq-4": "fail"}
    alone = plot_points([VARIANTS[0]])
    assert {p.x for p in alone} == {8}  # nothing to move aside from


def test_a_finished_variant_hands_its_gpu_to_the_next(monkeypatch, tmp_path: Path) -> None:
    """Variants get GPUs from a pool of slots: whichever finishes first frees its own GPU for the next."""
    import tasks.variants as matrix

    started: list[tuple[str, int]] = []
    finish_order = iter(["b", "a", "c", "d"])

    class FakeProcess:  # stands for a variant's `enginewright build` process
        def __init__(self, fmt: str):
            self.fmt, self.returncode, self.pid = fmt, None, 0

        def poll(self):
            if self.returncode is None and self.fmt == current[0]:
                self.returncode = 2
            return self.returncode

    current = [next(finish_order)]

    def fake_start(spec, fmt, run_dir, slot, parallel, api_url):
        started.append((fmt, slot))
        return matrix._Running(fmt, slot, FakeProcess(fmt), tmp_path / f"{fmt}.json", tmp_path / f"{fmt}.log")

    def fake_result(item):
        (tmp_path / f"{item.fmt}.log").write_text("")
        current[0] = next(finish_order, None)
        return VariantResult(item.fmt, "refused", reason="x")

    monkeypatch.setattr(matrix, "_start", fake_start)
    monkeypatch.setattr(matrix, "_result", fake_result)
    monkeypatch.setattr(matrix.time, "sleep", lambda s: None)
    results = matrix.run_variants(None, ["a", "b", "c", "d"], 2, tmp_path, "http://api", log=lambda m: None)
    assert [r.format for r in results] == ["a", "b", "c", "d"]
    assert started == [("a", 0), ("b", 1), ("c", 1), ("d", 0)]  # b (GPU 1) ended first, so c got GPU 1


def test_a_version_evaluated_again_is_recommended_on_its_own_verdict_and_the_table_says_so() -> None:
    """A matrix that evaluates an already registered version again under its smaller plan reports that evaluation's
    verdict, but only the version's own verdict (reached under the plan fixed before its data) earns an alias: a
    quick matrix once recommended by, and demoted on, a verdict the gate's error rates do not cover."""
    again = "already registered as v1; evaluated again under plan t0 6 documents in 1 looks, drop ≤ 1 points; " \
        "confidence 0.95; document order seed 0; 0-shot: verdict inconclusive " \
        "(the version's verdict, pass, is unchanged; `build --reevaluate` under its own plan re-judges it)"
    kept = variant("fp8-1", "inconclusive", 160, [-0.2])
    kept.report.update(version_verdict="pass", evaluated_again=again)
    lucky = variant("sq-2", "pass", 150, [-0.1])
    lucky.report.update(version_verdict="inconclusive", evaluated_again=again.replace("v1", "v2"))
    chosen, _ = recommend([kept, lucky], RecommendationPolicy())
    assert chosen is kept  # sq-2 is smaller and passed now, but its version stands on inconclusive
    assert recommend([lucky], RecommendationPolicy())[0] is None
    table = comparison_markdown([kept, lucky], "-")
    assert f"| inconclusive | not measured (no GPU) | {again} |" in table


def test_a_service_variant_is_read_from_its_typed_report_never_from_exception_text() -> None:
    """A service-mode variant's outcome came from parsing Prefect's "Flow run encountered an exception: GateFailed…";
    the build deployment now publishes a report on failure too, and a run without one is just failed."""
    from types import SimpleNamespace

    from enginewright.errors import GateFailed, InputError
    from tasks.variants import failure_report, variant_of_run

    def run(completed: bool, message: str = "") -> SimpleNamespace:
        state = SimpleNamespace(is_completed=lambda: completed, name="Completed" if completed else "Failed",
                                message=message)
        return SimpleNamespace(id="r1", state=state)

    assert failure_report(GateFailed("arc_easy dropped 6.0 points")) == {
        "status": "gate failed", "exit_code": 1, "error": "arc_easy dropped 6.0 points"}
    assert failure_report(InputError("nvfp4 needs a Hopper GPU"))["status"] == "refused"
    refused = variant_of_run("nvfp4", run(False, "anything"), failure_report(InputError("nvfp4 needs a Hopper GPU")))
    assert refused.status == "refused" and refused.reason.startswith("nvfp4 needs a Hopper GPU")
    crashed = variant_of_run("fp8", run(False, "Flow run encountered an exception: GateFailed: words"), None)
    assert crashed.status == "failed" and "GateFailed: words" in crashed.reason  # reported, not parsed
    report = {"status": "registered", "version": "3", "gate": {"overall": "pass", "tasks": []}}
    assert variant_of_run("fp8", run(True), report).status == "registered"  # type: ignore[arg-type]
