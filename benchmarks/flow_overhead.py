"""Orchestration overhead: the whole `build_engine` flow vs the same steps called as plain functions.

Both run in this one process on the same spec, each with its own fresh ENGINEWRIGHT_HOME (nothing cached),
plain functions first, after an untimed warm-up that pays the one-time costs for both. Prints a table of per-step seconds and the ratio flow / sum of plain steps.

    .venv/bin/python benchmarks/flow_overhead.py                      # SmolLM2-135M, fp8, limit 20
    .venv/bin/python benchmarks/flow_overhead.py --model DIR --limit 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from enginewright.config.settings import Settings
from enginewright.ops.process_env import prepare_process

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
prepare_process(Settings())  # the CLI's Prefect/MLflow settings


def plain_steps(spec, settings) -> dict[str, float]:
    """The flow's steps as plain function calls, in the flow's order, with the same inputs."""
    from enginewright.keys.build_key import compute_build_key
    from enginewright.keys.environment import environment_fingerprint, key_tool_versions
    from enginewright.keys.work_dir import WorkDir
    from tasks.bundle import finish_bundle
    from tasks.calibration import build_calibration_set, source_fingerprint
    from tasks.eval_data import check_eval_data
    from tasks.evaluate import evaluate_until_decided
    from tasks.export import export_checkpoint, exported_quant_algo
    from tasks.gate import evaluate_gate, write_gate_outputs
    from tasks.quantize import calibrate_and_quantize
    from tasks.records import gate_tags, lineage_tags, run_metrics, run_params
    from tasks.register import RunRecord, log_build_run, register_version
    from tasks.runtime_config import write_llm_api_yaml
    from tasks.smoke import smoke_check
    from tasks.sources import resolve_source
    from tasks.trtllm_build import engine_lane_status

    seconds: dict[str, float] = {}

    def timed(name, fn, *args):
        started = time.perf_counter()
        value = fn(*args)
        seconds[name] = time.perf_counter() - started
        return value

    source = timed("resolve", resolve_source, spec.source)
    fingerprint = timed("calibration-fingerprint", source_fingerprint, spec.calibration)
    data = timed("eval-data", check_eval_data, spec.evaluation.data_dir, list(spec.evaluation.tasks),
                 spec.evaluation.num_fewshot)
    key = compute_build_key(source.identity, spec, fingerprint, key_tool_versions())
    workdir = WorkDir.open(settings.builds_dir, key.digest)
    work, bundle = workdir.path, workdir.bundle
    calib = timed("calibration-data", build_calibration_set, spec.calibration, source.path, work / "calib.safetensors")
    state = timed("quantize", calibrate_and_quantize, source.path, calib, spec.quantization, spec.dtype,
                  spec.calibration.batch_size, work / "q.pth")
    checkpoint = timed("export", export_checkpoint, source.path, state, spec.dtype, bundle / "checkpoint")
    timed("llm-api-config", write_llm_api_yaml, spec.runtime, spec.quantization.kv_cache, bundle / "llm_api.yaml")
    engine = timed("tensorrt-llm-build", engine_lane_status)
    timed("smoke-check", smoke_check, source.path, state, spec.dtype, spec.gate.smoke_prompts,
          spec.gate.smoke_max_new_tokens)
    cache = settings.home / "eval-data"
    evaluation = timed("evaluate", evaluate_until_decided, source.path, source.identity, state, spec.dtype,
                       spec.evaluation, spec.gate, data, cache, settings.home / "baselines", workdir)
    baseline, candidate = evaluation.baseline, evaluation.candidate
    gate = timed("gate", evaluate_gate, baseline.samples_path, candidate.samples_path, evaluation.plans, spec.gate,
                 spec.evaluation)
    write_gate_outputs(gate, work / "gate")
    quant = exported_quant_algo(checkpoint)
    source_doc = {"kind": source.kind, "model": source.model, "repo_id": source.repo_id, "revision": source.revision}
    quant_doc = {"format": spec.quantization.format, "quant_algo": quant.get("quant_algo"),
                 "kv_cache_quant_algo": quant.get("kv_cache_quant_algo")}
    calib_doc = {"source_fingerprint": fingerprint, "tokens_sha256": calib.sha256}
    env = environment_fingerprint()
    timed("bundle", finish_bundle, bundle, "# card\n", {"bundle_id": key.digest, "environment": env})
    record = RunRecord(spec.registry.model_name, key.digest, bundle,
                       {"evaluation": [baseline.samples_path, candidate.samples_path],
                        "gate": [work / "gate" / "gate_report.json", work / "gate" / "gate_plot.png"]},
                       run_params(spec), run_metrics(baseline, candidate, gate),
                       lineage_tags(key.digest, source_doc, quant_doc, calib_doc, env, engine) | gate_tags(gate),
                       "# card\n")
    run = timed("log-run", log_build_run, record, settings.tracking_uri, settings.artifact_root)
    timed("register", register_version, record, run, gate["overall"] == "pass", settings.tracking_uri)
    return seconds


def main() -> None:
    from enginewright.config.settings import Settings
    from enginewright.config.spec import build_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Settings().default_model_dir))
    parser.add_argument("--quant", default="fp8")
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()
    # A wide gate threshold: this measures orchestration, and a failed gate would end the flow early.
    overrides = {"source": {"model": args.model}, "quantization": {"format": args.quant},
                 "evaluation": {"limit": args.limit}, "gate": {"max_drop_points": 100},
                 "registry": {"model_name": "bench"}}

    # A short untimed warm-up pays the one-time costs (imports, datasets' Arrow cache of the eval files,
    # the page cache) so that neither timed side carries them for the other.
    scratch = Path(tempfile.mkdtemp(prefix="enginewright-bench-"))
    os.environ["ENGINEWRIGHT_HOME"] = str(scratch / "warm-up")
    warm_up = {**overrides, "evaluation": {"limit": 1}}
    plain_steps(build_spec(Settings(), None, warm_up), Settings())

    os.environ["ENGINEWRIGHT_HOME"] = str(scratch / "plain")
    settings = Settings()
    spec = build_spec(settings, None, overrides)
    started = time.perf_counter()
    steps = plain_steps(spec, settings)
    plain_total = time.perf_counter() - started

    from flows.build import run_build

    os.environ["ENGINEWRIGHT_HOME"] = str(scratch / "flow")
    settings = Settings()
    started = time.perf_counter()
    run_build(build_spec(settings, None, overrides), settings).result()
    flow_total = time.perf_counter() - started

    print(f"\nmodel {args.model}, {args.quant}, limit {args.limit}, tasks {','.join(spec.evaluation.tasks)}\n")
    print("| step | plain function, s |\n|---|---|")
    for name, value in steps.items():
        print(f"| {name} | {value:.2f} |")
    print(f"| **sum of plain steps** | {plain_total:.2f} |")
    print(f"| **whole flow (incl. Prefect ephemeral API start)** | {flow_total:.2f} |")
    print(f"\nratio flow / plain = {flow_total / plain_total:.3f}")


if __name__ == "__main__":
    main()
