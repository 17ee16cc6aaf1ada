"""The whole `enginewright build` flow on one model, as a GPU worker runs it: wall time from start to registered
version, time per step (from Prefect's task runs), model loads, peak GPU memory. FP8, every local document of
ARC-Easy, ARC-Challenge, HellaSwag and MMLU by default. Prefect's ephemeral API, SQLite MLflow, local bundle
store: set ENGINEWRIGHT_HOME to a scratch directory. TensorRT-LLM is not installed where this ran so far, so
its step ends Skipped; the candidate is ModelOpt's simulated quantization computing with the exported weights.

    python benchmarks/gpu_build.py --model ~/.enginewright/models/SmolLM2-135M-Instruct --out smollm2.json
    python benchmarks/gpu_build.py --random-llama8b --tokenizer DIR --max-drop 100 --out llama8b.json

`--bare` then runs, in the same process on the same GPU, what the build's quantize and export steps amount to with
ModelOpt alone — `from_pretrained`, `mtq.quantize` over the build's own calibration tokens, `export_hf_checkpoint` —
so the flow's overhead is a ratio measured side by side (issue 30).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ALL_TASKS = ["arc_easy", "arc_challenge", "hellaswag", "mmlu"]


class LoadCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.loads.append(record.getMessage())


def step_seconds(flow_run_id) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: (run.end_time - run.start_time).total_seconds()
            for run in runs if run.start_time and run.end_time}


def bare_modelopt(checkpoint: Path, spec, out_dir: Path) -> dict[str, float]:
    """ModelOpt alone on the build's checkpoint and calibration tokens: load, FP8 calibrate, export. Seconds each."""
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM

    from enginewright.quant.devices import calibration_batch_size
    from tasks.calibration import build_calibration_set, load_calibration_ids

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    ids = load_calibration_ids(build_calibration_set(spec.calibration, checkpoint, out_dir / "calib.safetensors"))
    seconds["calibration tokens"] = time.perf_counter() - started
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.bfloat16, device_map="cuda")
    seconds["load"] = time.perf_counter() - started

    batch = calibration_batch_size(spec.calibration.batch_size, model.config, spec.calibration.seq_len)  # the flow's

    def forward_loop(m) -> None:
        with torch.no_grad():
            for chunk in ids.split(batch):
                m(input_ids=chunk.to(m.device))

    started = time.perf_counter()
    mtq.quantize(model, mtq.FP8_DEFAULT_CFG, forward_loop)
    torch.cuda.synchronize()
    seconds["mtq.quantize"] = time.perf_counter() - started
    started = time.perf_counter()
    export_hf_checkpoint(model, export_dir=str(out_dir / "export"))
    seconds["export_hf_checkpoint"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    del model
    torch.cuda.empty_cache()
    return seconds


def main() -> None:
    import torch
    from common import add_model_source

    from enginewright.config.settings import Settings
    from enginewright.config.spec import build_spec
    from flows.build import run_build

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_source(parser)
    parser.add_argument("--quant", default="fp8")
    parser.add_argument("--tasks", default=",".join(ALL_TASKS))
    parser.add_argument("--limit", type=int, default=None, help="documents per task; default: all")
    parser.add_argument("--look-size", type=int, default=None,
                        help="documents per look of the sequential gate; default: one look, every planned document "
                        "evaluated (what a timing of 'every local document' needs)")
    parser.add_argument("--batch-size", type=int, default=64, help="lm-eval batch size")
    parser.add_argument("--max-drop", type=float, default=1.0, help="gate.max_drop_points")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bare", action="store_true",
                        help="afterwards, ModelOpt alone on the same checkpoint and calibration tokens (FP8 only)")
    args = parser.parse_args()

    settings = Settings()
    model = args.model
    if args.random_llama8b:
        sys.path.insert(0, str(Path(__file__).parent))
        from gpu_lane import random_llama8b

        model = random_llama8b(settings.home / "models" / "llama3-8b-shaped", args.tokenizer)
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    counter = LoadCounter()
    logging.getLogger("enginewright.quant.models").addHandler(counter)
    logging.getLogger("enginewright.quant.models").setLevel(logging.INFO)
    spec = build_spec(settings, None, {
        "source": {"model": str(model)}, "quantization": {"format": args.quant},
        "evaluation": {"tasks": args.tasks.split(","), "limit": args.limit, "look_size": args.look_size,
                       "batch_size": args.batch_size},
        "gate": {"max_drop_points": args.max_drop},
    })
    started = time.perf_counter()
    state = run_build(spec, settings)
    wall = time.perf_counter() - started
    outcome = state.result()
    steps = step_seconds(state.state_details.flow_run_id)
    report = {
        "model": str(model), "format": args.quant, "tasks": args.tasks, "limit": args.limit,
        "wall_seconds": wall, "steps": steps, "model_loads": len(counter.loads), "loads": counter.loads,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "version": f"{outcome.registered.name} v{outcome.registered.version}",
        "gate": outcome.gate["overall"], "candidate_runtime": outcome.gate["candidate_runtime"],
        "docs": {"baseline": outcome.baseline.docs_evaluated, "candidate": outcome.candidate.docs_evaluated},
        "docs_per_second": {"baseline": outcome.baseline.docs_per_second,
                            "candidate": outcome.candidate.docs_per_second},
        "gate_rows": [{k: row[k] for k in ("task", "n", "baseline", "candidate", "difference_points", "verdict")}
                      for row in outcome.gate["tasks"]],
    }
    if args.bare:
        report["bare_modelopt_seconds"] = bare_modelopt(model, spec, settings.home / "bare-modelopt")
        flow_steps = sum(v for k, v in steps.items() if k in ("quantize", "export"))
        report["flow_quantize_export_over_bare"] = flow_steps / report["bare_modelopt_seconds"]["total"]
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['gpu']}: {model.name}, {args.quant}, wall {wall:.0f} s to {report['version']} "
          f"(gate {report['gate']}), {report['model_loads']} model loads, peak GPU {report['peak_gpu_gib']}")
    print("| step | seconds |\n|---|---|")
    for name, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.1f} |")
    if args.bare:
        bare = report["bare_modelopt_seconds"]
        print("bare ModelOpt on the same GPU: " + ", ".join(f"{k} {v:.1f} s" for k, v in bare.items())
              + f"; the flow's quantize + export steps take {report['flow_quantize_export_over_bare']:.2f}× that")
    print(f"candidate / baseline docs per second: "
          f"{report['docs_per_second']['candidate'] / max(report['docs_per_second']['baseline'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
