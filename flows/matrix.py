"""`build_matrix`: several quantization variants of one spec, in parallel, compared, one recommended.

A variant is a format (fp8) or an AutoQuantize budget (auto-5.4). The parent flow computes what all variants share
once: the source resolution, the calibration set, the baseline evaluation and the AutoQuantize search (the same cached tasks the build flow uses, so each variant finds them done). Each
variant is then an ordinary `enginewright build` in its own process, a separate `build_engine` flow run
reporting to the parent's Prefect API: a crash or an out-of-memory in one does not take the others down. On
GPU workers each variant gets its own GPU (`CUDA_VISIBLE_DEVICES`); on the CPU the cores are divided.
`build_matrix_service` is the service mode: each variant a flow run of the build deployment on its work pool
(tasks/variants.py), nothing computed beforehand (the workers need not share this process's ENGINEWRIGHT_HOME).
The comparison (table + plot) goes to a Prefect artifact and an MLflow run; the recommended version gets
alias `recommended` and a tag saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.settings import (
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)

from enginewright.config.settings import Settings, load_settings
from enginewright.config.spec import BuildSpec
from enginewright.ops.process_env import prepare_process
from tasks.auto_quantize import shared_search_task
from tasks.calibration import calibration_task, fingerprint_calibration_task
from tasks.checkpoint_sources import source_context
from tasks.compare import (
    RecommendationPolicy,
    VariantResult,
    comparison_markdown,
    comparison_plot,
    matrix_dir,
    recommend,
)
from tasks.eval_data import eval_data_task
from tasks.evaluate import baseline_task
from tasks.sources import resolve_task
from tasks.variants import record_comparison, run_variants, submit_variants


@dataclass(frozen=True)
class MatrixOutcome:
    variants: list[VariantResult]
    recommended: VariantResult | None
    reason: str
    table: str
    run_dir: Path


@flow(name="build_matrix")
def build_matrix(spec: BuildSpec, formats: list[str], parallel: int, policy: RecommendationPolicy,
                 settings: Settings | None = None) -> MatrixOutcome:
    from prefect.client.orchestration import get_client

    settings = settings or load_settings()
    prepare_process(settings)
    logger = get_run_logger()
    # What every variant shares, computed once, with the keys the variant builds use.
    source = resolve_task(spec.source, source_context(settings))
    fingerprint = fingerprint_calibration_task(spec.calibration)
    calib = calibration_task(spec.calibration, source.path, source.identity, fingerprint, settings.calibration_dir)
    eval_data = eval_data_task(spec.evaluation.data_dir, list(spec.evaluation.tasks), spec.evaluation.num_fewshot)
    run_dir = matrix_dir(settings.builds_dir, spec, formats)
    baseline_task(source.path, source.identity, spec.dtype, spec.evaluation, eval_data, settings.eval_cache_dir,
                  settings.baselines_dir)
    shared_search_task(spec.quantization, formats, source.path, source.identity, calib, spec.dtype,
                       spec.calibration.batch_size, settings.auto_quantize_dir)  # the auto-<bits> variants' one search
    logger.info("shared calibration set, baseline and search ready; %d variants, %d at a time", len(formats), parallel)

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url).rstrip("/")
    variants = run_variants(spec, formats, parallel, run_dir, api_url, log=logger.info)
    return compare_and_record(spec, variants, policy, settings, run_dir)


@flow(name="build_matrix_service")
def build_matrix_service(spec: BuildSpec, formats: list[str], policy: RecommendationPolicy,
                         submit_to: str = "build_revision/build", job_variables: dict[str, object] | None = None,
                         settings: Settings | None = None) -> MatrixOutcome:
    """Service mode: each variant a flow run of deployment `submit_to` on its work pool (its own Kubernetes Job and
    GPUs there), bounded by the `gpu-builds` limit; nothing is computed here but the comparison, so this flow needs
    no GPU (prefect.yaml runs it on the cpu pool)."""
    settings = settings or load_settings()
    prepare_process(settings)
    variants = submit_variants(spec, formats, submit_to, job_variables or {}, log=get_run_logger().info)
    return compare_and_record(spec, variants, policy, settings, matrix_dir(settings.builds_dir, spec, formats))


def compare_and_record(spec: BuildSpec, variants: list[VariantResult], policy: RecommendationPolicy,
                       settings: Settings, run_dir: Path) -> MatrixOutcome:
    """Both matrices end alike: the recommendation, the table and plot (files, Prefect artifact, MLflow run)."""
    chosen, reason = recommend(variants, policy)
    table = comparison_markdown(variants, reason)
    run_dir.mkdir(parents=True, exist_ok=True)
    plot = comparison_plot(variants, run_dir / "comparison.png")
    (run_dir / "comparison.md").write_text(table)
    create_markdown_artifact(key="matrix-comparison", markdown=table, description="Matrix build comparison")
    record_comparison(variants, chosen, reason, table, plot, spec.registry.model_name, policy, settings.tracking_uri,
                      settings.artifact_root)
    get_run_logger().info("recommendation: %s", reason)
    return MatrixOutcome(variants, chosen, reason, table, run_dir)


def run_matrix(spec: BuildSpec, formats: list[str], parallel: int, policy: RecommendationPolicy,
               settings: Settings, submit_to: str | None = None, job_variables: dict[str, object] | None = None):
    """The matrix here, or (`submit_to`, a deployment) in service mode."""
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    updates = {PREFECT_RESULTS_LOCAL_STORAGE_PATH: settings.results_dir, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}
    with temporary_settings(updates=updates):
        if submit_to is not None:
            return build_matrix_service(spec, formats, policy, submit_to, job_variables, settings, return_state=True)
        return build_matrix(spec, formats, parallel, policy, settings, return_state=True)
