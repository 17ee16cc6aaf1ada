"""Calibration and export (with its verification) of one model under two memory plans, side by side in one run: the
plan chosen with the device's whole memory, and the plan chosen under `--device-limit` (ENGINEWRIGHT_DEVICE_MEMORY_LIMIT,
which on a GPU torch's allocator also enforces). Each plan runs in its own process, so peak-memory counters and the
memory fraction are its own. Prints a table of plan, seconds, peak device and host memory, and whether the two
exports hold the same tensors. TensorRT-LLM is not involved: this is ModelOpt calibration and export only.

    python benchmarks/memory_plan.py --random-llama8b --tokenizer DIR --calib FILE --device-limit 12GiB --work DIR
    python benchmarks/memory_plan.py --model ~/.enginewright/models/SmolLM2-135M-Instruct --calib FILE \\
        --device-limit 200MiB --work DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(args: argparse.Namespace) -> None:
    """One plan, in this process: choose it, calibrate, export and verify; write the figures to --out."""
    import torch

    from enginewright.config.settings import Settings
    from enginewright.config.spec import QuantizationSpec, build_spec
    from tasks.calibration import CalibrationSet
    from tasks.export import export_and_verify
    from tasks.plan import plan_memory
    from tasks.quantize import calibrate_and_quantize

    work = args.work
    settings = Settings(home=work / "home")
    spec = build_spec(settings, None, {
        "source": {"model": str(args.model)}, "quantization": {"format": args.quant},
        "calibration": {"source": str(args.calib), "num_samples": args.num_samples, "seq_len": args.seq_len,
                        "batch_size": args.batch_size},
    })
    fields = json.loads(args.calib_set.read_text())
    calib = CalibrationSet(**(fields | {"path": Path(fields["path"])}))
    plan = plan_memory(args.model, spec, args.limit, work)
    started = time.perf_counter()
    state = calibrate_and_quantize(args.model, calib, QuantizationSpec(format=args.quant), spec.dtype, args.batch_size,
                                   work / "quantized.pth", plan, work / "offload-calibrate")
    calibrated = time.perf_counter()
    peak_calibrate = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    exported = export_and_verify(args.model, state, spec.dtype, work / "checkpoint", plan, work / "offload-export")
    finished = time.perf_counter()
    report = {
        "plan": plan.kind, "plan_lines": plan.lines(), "limit": args.limit,
        "calibrate_seconds": calibrated - started, "export_verify_seconds": finished - calibrated,
        "peak_device_gib_calibrate": peak_calibrate / 2**30 if peak_calibrate is not None else None,
        "peak_device_gib_export": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "peak_host_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "verification": exported.verification.summary(), "checkpoint": str(exported.checkpoint),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    args.out.write_text(json.dumps(report, indent=2))


def same_tensors(a: Path, b: Path) -> str:
    from safetensors import safe_open

    def tensors(folder: Path) -> dict[str, tuple[Path, str]]:
        found = {}
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                found.update({name: (file, name) for name in handle.keys()})
        return found

    left, right = tensors(a), tensors(b)
    if left.keys() != right.keys():
        return f"different tensor names ({len(left)} vs {len(right)})"
    differing = 0
    for name, (file, key) in left.items():
        with safe_open(str(file), framework="pt") as x, safe_open(str(right[name][0]), framework="pt") as y:
            import torch

            differing += not torch.equal(x.get_tensor(key), y.get_tensor(key))
    return f"{len(left) - differing} of {len(left)} tensors equal"


def main() -> None:
    from common import add_model_source

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_source(parser)
    parser.add_argument("--calib", type=Path, required=True, help="calibration text (.txt)")
    parser.add_argument("--quant", default="fp8")
    parser.add_argument("--num-samples", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device-limit", required=True, help="the constrained run's limit, e.g. 12GiB")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (checkpoints, states, exports)")
    parser.add_argument("--out", type=Path, help="JSON of both runs")
    parser.add_argument("--only", choices=["whole", "limited"], help="run one of the two (the other's JSON, if "
                        "already in --work, is reported beside it)")
    # one plan's process (internal)
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calib-set", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(args)
        return

    from pydantic import ByteSize, TypeAdapter

    from enginewright.config.spec import CalibrationSpec
    from tasks.calibration import build_calibration_set

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if args.random_llama8b:
        sys.path.insert(0, str(HERE))
        from gpu_lane import random_llama8b

        model = args.work / "llama3-8b-shaped"
        if not (model / "config.json").is_file():
            random_llama8b(model, args.tokenizer)
    calib_spec = CalibrationSpec(source=str(args.calib), num_samples=args.num_samples, seq_len=args.seq_len)
    calib = build_calibration_set(calib_spec, model, args.work / "calibration.safetensors")
    calib_file = args.work / "calibration.json"
    calib_file.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(calib).items()}))
    limit = int(TypeAdapter(ByteSize).validate_python(args.device_limit))
    # ModelOpt builds its FP8 CUDA extension on first use (63 s on the H200): built here, before either run is timed.
    subprocess.run([sys.executable, "-c", "import torch, modelopt.torch.quantization.extensions as e; "
                    "torch.cuda.is_available() and e.get_cuda_ext_fp8(raise_if_failed=True)"], check=True)
    runs = {}
    for label, run_limit in (("whole", None), ("limited", limit)):
        out = args.work / f"{label}.json"
        if args.only in (None, label):
            command = [sys.executable, __file__, "--run-one", "--model", str(model), "--calib", str(args.calib),
                       "--calib-set", str(calib_file), "--quant", args.quant, "--num-samples", str(args.num_samples),
                       "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
                       "--work", str(args.work / label), "--out", str(out), "--device-limit", args.device_limit]
            command += ["--limit", str(run_limit)] if run_limit is not None else []
            (args.work / label).mkdir(exist_ok=True)
            subprocess.run(command, check=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        if out.is_file():
            runs[label] = json.loads(out.read_text())
    if len(runs) == 2:
        runs["exports"] = same_tensors(Path(runs["whole"]["checkpoint"]), Path(runs["limited"]["checkpoint"]))
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2))
    device = next(iter(r["device"] for k, r in runs.items() if k != "exports"))
    print(f"\n{device}: {model.name}, {args.quant}, {args.num_samples} x {args.seq_len} calibration tokens, batch "
          f"{args.batch_size}")
    print("| run | plan | calibrate s | export+verify s | peak device GiB (calibrate / export) | peak host GiB |")
    print("|---|---|---|---|---|---|")
    for label in ("whole", "limited"):
        if label in runs:
            r = runs[label]
            peak = (f"{r['peak_device_gib_calibrate']:.1f} / {r['peak_device_gib_export']:.1f}"
                    if r["peak_device_gib_calibrate"] is not None else "n/a (CPU)")
            name = "whole device" if label == "whole" else f"limit {args.device_limit}"
            print(f"| {name} | {r['plan']} | {r['calibrate_seconds']:.1f} | {r['export_verify_seconds']:.1f} | "
                  f"{peak} | {r['peak_host_gib']:.1f} |")
    if "exports" in runs:
        print(f"exports: {runs['exports']}")
        ratio = runs["limited"]["calibrate_seconds"] / runs["whole"]["calibrate_seconds"]
        print(f"calibration time, limited / whole: {ratio:.2f}")
    for label in ("whole", "limited"):
        if label in runs:
            print(f"{label}: " + "; ".join(runs[label]["plan_lines"][:2]))


if __name__ == "__main__":
    main()
