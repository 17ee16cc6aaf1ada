"""`enginewright build` and `enginewright matrix`: one build on this machine, or several variants compared."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel

from enginewright.cli.spec_flags import add_spec_flags, comma_list, overrides_from_args
from enginewright.config.settings import Settings
from enginewright.config.spec import AutoQuantizeSpec, BuildSpec
from enginewright.errors import EnginewrightError, InputError
from enginewright.ops.console import command_log
from enginewright.ops.prefect_server import (
    TemporaryServer,
    flow_run_link,
    on_temporary_server,
    start_temporary_server,
)
from tasks.compare import RecommendationPolicy
from tasks.preflight import Preflight, check_before_work, plan_memory_before_work


def bits_list(text: str) -> list[float]:
    """--auto-bits of the matrix: comma-separated budgets, e.g. 4.8,5.4,6.0."""
    try:
        return [float(item) for item in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated bits, e.g. 4.8,5.4,6.0, got {text!r}") from None


def _field_help(model: type[BaseModel], field: str) -> str:
    return (model.model_fields[field].description or "").replace("%", "%%")


def add_commands(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser(
        "build", help="run the build flow once, on this machine",
        description="Run the build flow: resolve → calibrate → quantize → export → evaluate → register. "
        "With no flags it builds the embedded default (SmolLM2-135M-Instruct, fp8, shared offline data); "
        "flags override --spec, which overrides the defaults. Every spec field is a flag (--<section>.<field>, "
        "the common ones also by a short name). Exit codes: 0 built, 1 failed, 2 bad input.",
    )
    add_spec_flags(build, "YAML build spec (see specs/); flags override its values")
    build.add_argument("--dry-run", action="store_true", help="validate the spec and inputs, print it, build nothing")
    build.add_argument("--report-json", type=Path, help="also write the outcome (version, gate, sizes) as JSON here")
    build.add_argument("--device", help="cpu, cuda or cuda:N[,M…]: where this build computes (the setting "
                       "ENGINEWRIGHT_DEVICE for this build; cuda:N makes only those GPUs visible)")
    build.add_argument("--export-dir", "--output", type=Path, dest="export_dir",
                       help="also copy the registered bundle (checkpoint, llm_api.yaml, manifest, card) into this new "
                       "or empty folder, verified against its manifest")
    build.set_defaults(run=cmd_build)

    matrix = commands.add_parser(
        "matrix", help="build several quantization variants in parallel, compare them, recommend one",
        description="Build each format of --quant (comma-separated) from the same spec, each in its own process "
        "(a crash in one leaves the others running), sharing one calibration set and one baseline evaluation. "
        "Prints and records one comparison (MLflow run in `enginewright-matrices`, Prefect artifact "
        "`matrix-comparison`) and sets alias `recommended` on the version the policy picks. Exit codes: 0 done "
        "(whatever each variant's outcome), 1 no variant registered, 2 bad input.",
    )
    # each variant sets its own quantization.format or budget; a matrix never re-judges a registered version
    add_spec_flags(matrix, "YAML build spec; each variant replaces its quantization.format (or .auto)",
                   leave_out=("quantization.format", "quantization.auto.effective_bits", "registry.reevaluate"))
    matrix.add_argument("--quant", default=None, help="comma-separated formats, e.g. fp8,int8_sq,int4_awq,w4a8_awq")
    matrix.add_argument("--auto-bits", type=bits_list, default=None,
                        help="AutoQuantize budgets, comma-separated (e.g. 4.8,5.4,6.0): one variant auto-<bits> each, "
                        "beside the formats of --quant; one search serves them all. "
                        + _field_help(AutoQuantizeSpec, "effective_bits"))
    matrix.add_argument("--parallel", type=int, default=None,
                        help="variants at a time [default: one per GPU, or all of them on the CPU]")
    matrix.add_argument("--policy", choices=["smallest", "fewest_bits", "most_accurate", "fastest"], default="smallest",
                        help=_field_help(RecommendationPolicy, "objective"))
    matrix.add_argument("--require", choices=["pass", "pass_or_inconclusive"], default="pass",
                        help=_field_help(RecommendationPolicy, "require"))
    matrix.add_argument("--submit-to", metavar="DEPLOYMENT",
                        help="service mode: submit each variant as a flow run of this deployment (e.g. "
                        "build_revision/build) on its work pool instead of building here; the concurrency limit "
                        "gpu-builds bounds how many build at once. Needs PREFECT_API_URL")
    matrix.add_argument("--gpu-class", help="service mode: job variable gpu_class of each variant's run (a class of "
                        "enginewright/ops/gpu_pools.py: a100, h100, h200, b200)")
    matrix.add_argument("--gpu-count", type=int, help="service mode: job variable gpu_count of each variant's run")
    matrix.set_defaults(run=cmd_matrix)


def cmd_matrix(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.config.spec import (
        AUTO_VARIANT_PREFIX,
        build_spec,
        variant_quantization,
        with_auto_settings,
    )
    from tasks.preflight import check_matrix_budgets
    from tasks.variants import service_job_variables

    formats = comma_list(args.quant or "")
    variants = formats + [f"{AUTO_VARIANT_PREFIX}{bits:g}" for bits in (args.auto_bits or [])]
    if len(set(variants)) < 2 or len(set(variants)) != len(variants):
        budgets = ",".join(f"{b:g}" for b in args.auto_bits) if args.auto_bits else "none"
        raise InputError(f"--quant {args.quant!r} and --auto-bits {budgets} must name at least two different variants, "
                         "each once (formats, e.g. --quant fp8,int4_awq; budgets, e.g. --auto-bits 4.8,5.4,6.0)")
    overrides = overrides_from_args(args)
    quantization = overrides.pop("quantization", {})
    auto = quantization.pop("auto", None)
    # The shared spec (each variant replaces its quantization.format or .auto) and every variant's recipe validated
    # now: a typo is bad input; a format this worker cannot calibrate is a refused variant later.
    spec = build_spec(settings, args.spec, overrides | {"quantization": quantization})
    if auto:
        spec = spec.model_copy(update={"quantization": with_auto_settings(spec.quantization, auto)})
    for variant in variants:
        variant_quantization(spec.quantization, variant)
    # fp8 for the shared checks: a variant whose format this worker cannot calibrate is refused on its own
    shared = spec.model_copy(update={"quantization": variant_quantization(spec.quantization, "fp8")})
    _print_warning(check_before_work(shared, settings))
    check_matrix_budgets(spec, variants, settings)
    job_variables = service_job_variables(args.submit_to, args.gpu_class, args.gpu_count)
    import torch

    from flows.matrix import run_matrix

    parallel = args.parallel or (torch.cuda.device_count() or len(variants))
    policy = RecommendationPolicy(objective=args.policy, require=args.require)
    with command_log(settings.home, "matrix"):
        outcome = run_matrix(spec, variants, parallel, policy, settings, args.submit_to, job_variables).result()
    print("\n" + outcome.table)
    print(f"comparison and logs: {outcome.run_dir}")
    return 0 if any(v.status == "registered" for v in outcome.variants) else 1


def _print_warning(preflight: Preflight) -> Preflight:
    if preflight.warning:
        print(f"warning: {preflight.warning}", file=sys.stderr)
    return preflight


def check_report_destination(path: Path) -> None:
    """Before any work: a report that cannot be written would fail the command after a version was registered."""
    if path.is_dir():
        raise InputError(f"--report-json {str(path)!r} is a directory; pass a file path (its folder must exist)")
    if not path.parent.is_dir():
        raise InputError(f"--report-json {str(path)!r}: folder {str(path.parent)!r} does not exist; create it or "
                         "pass a path in an existing folder")


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    """A build; with --report-json, its outcome is written on success *and* on failure (the matrix reads it)."""
    from tasks.variants import write_failure_report

    if args.report_json is not None:
        check_report_destination(args.report_json)
    if args.export_dir is not None:
        from enginewright.bundle.bundle_store import require_empty_destination

        require_empty_destination(args.export_dir)  # before any work, as pull checks it
    try:
        return run_build_command(args, settings)
    except Exception as exc:
        if args.report_json is not None:
            write_failure_report(exc, args.report_json)
        raise


def run_build_command(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.config.spec import build_spec

    spec = build_spec(settings, args.spec, overrides_from_args(args))
    # a build's server boots while the input is checked and the steps import; a dry run starts none
    server = TemporaryServer(None, None) if args.dry_run else start_temporary_server()
    try:
        return run_checked_build(args, settings, spec, server)
    finally:
        server.close()


def run_checked_build(args: argparse.Namespace, settings: Settings, spec: BuildSpec, server: TemporaryServer) -> int:
    """The input checked (exit 2 before anything is written), then the dry run's report or the build, against
    `server` (enginewright/ops/prefect_server.py) where it started."""
    preflight = _print_warning(check_before_work(spec, settings))
    memory = plan_memory_before_work(spec, settings)
    if args.dry_run:
        import yaml

        from enginewright.serving.serving_runtimes import mix_serving_summary, serving_summary

        print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        print(preflight.power)
        print("Memory plan (enginewright/quant/memory_plan.py):")
        print("\n".join(f"- {line}" for line in memory.lines()) if memory else
              "- made after the checkpoint is downloaded (it reads the checkpoint's safetensors headers)")
        quantization = spec.quantization
        print(f"Serving {quantization.variant} (enginewright/serving/serving_runtimes.py):")
        print("\n".join(f"- {line}" for line in (mix_serving_summary(quantization.candidate_formats)
                                                  if quantization.auto else serving_summary(quantization.format))))
        return 0
    from enginewright.ops.disk import disk_full_error
    from tasks.summary import build_note, build_summary
    from tasks.variants import write_report

    try:
        with command_log(settings.home, "build") as log:
            from flows.build import run_build

            with on_temporary_server(server):
                state = run_build(spec, settings)
            outcome = state.result()
    except Exception as exc:
        full = disk_full_error(exc, settings.builds_dir)
        if full is not None:
            raise full from None
        if isinstance(exc, EnginewrightError):
            raise
        raise EnginewrightError(f"the build failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                " (the traceback is in the log)") from exc
    print(build_summary(outcome, settings.tracking_uri))
    note = build_note(outcome)
    if note:
        print(note, file=sys.stderr)
    print(f"log:           {log}")
    print(f"prefect:       {flow_run_link(state.state_details.flow_run_id)}")
    if args.report_json:
        write_report(outcome, args.report_json)
    if args.export_dir is not None:
        export_bundle(outcome.registered.name, outcome.registered.version, args.export_dir, settings)
    return 0


def export_bundle(name: str, version: str, dest: Path, settings: Settings) -> None:
    """The registered bundle copied to `dest` the way `enginewright pull` does: every file checked against the
    manifest, nothing left at `dest` when a check fails."""
    from enginewright.registry.pull import pull_bundle

    _, manifest = pull_bundle(f"models:/{name}/{version}", dest, settings)
    print(f"exported:      {dest} ({len(manifest['files'])} files verified)")
