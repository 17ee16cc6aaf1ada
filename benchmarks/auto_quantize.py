"""AutoQuantize's cost against a plain format, side by side in one run (issue 15): plain FP8 calibration (and its
export + verification), then ModelOpt's search (once) and, for each effective-bits budget, its re-solve, calibration
(and export + verification). Prints a table: seconds and peak GPU memory of each part, the bits each budget achieved
and its format mix, and each part's ratio to the plain format's.

    python benchmarks/auto_quantize.py --model ~/.enginewright/models/SmolLM2-135M-Instruct \\
        --calib ../shared/data/calib/wikitext2_train.txt --budgets 7,8,9 --work DIR
    python3 benchmarks/auto_quantize.py --random-llama8b --tokenizer DIR --calib wikitext2_train.txt \\
        --num-samples 128 --seq-len 512 --batch-size 8 --budgets 5.4 --no-export --work DIR     # a GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def describe_mix(mix) -> str:
    counts = Counter(mix.groups.values())
    return f"{mix.effective_bits:.2f} bits achieved; groups: " + ", ".join(f"{n} {f}" for f, n in sorted(counts.items()))


def main() -> None:
    from common import add_model_source

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_source(parser)
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--candidates", default="fp8,int4_awq")
    parser.add_argument("--method", choices=["gradient", "kl_div"], default="gradient")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4, help="calibration and scoring batch, every part alike")
    parser.add_argument("--score-steps", type=int, default=8, help="batches scored")
    parser.add_argument("--budgets", default="auto", help="comma-separated bits; auto: three between the "
                        "candidates' minimum and halfway to 16")
    parser.add_argument("--no-export", action="store_true", help="calibration only (export + verification skipped)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--collect", action="store_true", help="gc.collect() after each part (what stays allocated "
                        "then is held by a live reference); without it, each part starts as the build's steps do")
    args = parser.parse_args()

    import torch

    from enginewright.config.spec import AutoQuantizeSpec, CalibrationSpec, QuantizationSpec
    from enginewright.quant.effective_bits import minimum_effective_bits, plain_effective_bits
    from tasks.auto_quantize import load_search_state, quantize_mix, resolve, search_for
    from tasks.calibration import build_calibration_set
    from tasks.export import export_and_verify
    from tasks.quantize import calibrate_and_quantize

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if args.random_llama8b:
        sys.path.insert(0, str(HERE))
        from gpu_lane import random_llama8b

        model = work / "llama3-8b-shaped"
        if not (model / "config.json").is_file():
            random_llama8b(model, args.tokenizer)
    cuda = torch.cuda.is_available()
    if cuda:  # ModelOpt builds its CUDA extensions on first use (71 s FP8, 73 s INT4 on an H200): before any timing
        subprocess.run([sys.executable, "-c", "import modelopt.torch.quantization.extensions as e; "
                        "e.get_cuda_ext_fp8(raise_if_failed=True); e.get_cuda_ext(raise_if_failed=True)"], check=True)
    calib = build_calibration_set(CalibrationSpec(source=str(args.calib), num_samples=args.num_samples,
                                                  seq_len=args.seq_len), model, work / "calib.safetensors")
    candidates = [c.strip() for c in args.candidates.split(",")]
    floor = minimum_effective_bits(model, candidates, [])
    budgets = ([round(floor + k * (16 - floor) / 8, 2) for k in (1, 2, 3)] if args.budgets == "auto"
               else [float(b) for b in args.budgets.split(",")])
    rows: list[dict] = []

    def timed(name: str, result: str, fn):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        value = fn()
        row = {"part": name, "seconds": time.perf_counter() - started, "result": result(value) if result else "",
               "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
               "after_gpu_gib": torch.cuda.memory_allocated() / 2**30 if cuda else None}
        if args.collect:  # what is left after a collection is held by a live reference, not by a cycle awaiting one
            gc.collect()
        row["after_gc_gpu_gib"] = torch.cuda.memory_allocated() / 2**30 if cuda and args.collect else None
        rows.append(row)
        print(f"{name}: {row['seconds']:.1f} s", flush=True)
        return value

    plain = timed("fp8: calibrate", lambda s: f"{s.effective_bits:.2f} bits",
                  lambda: calibrate_and_quantize(model, calib, QuantizationSpec(format="fp8"), "bfloat16",
                                                 args.batch_size, work / "fp8.pth"))
    if not args.no_export:
        timed("fp8: export + verify", None, lambda: export_and_verify(model, plain, "bfloat16", work / "fp8-checkpoint"))
    base = QuantizationSpec(auto=AutoQuantizeSpec(formats=candidates, effective_bits=budgets[0], method=args.method,
                                                  score_batches=args.score_steps))
    state = timed(f"search ({', '.join(candidates)}; {args.method}, {args.score_steps} batches scored)", None,
                  lambda: search_for(base, model, f"local:{model}", calib, "bfloat16", args.batch_size,
                                     work / "searches"))
    search_state = load_search_state(state)
    for budget in budgets:
        mix = timed(f"budget {budget:g}: re-solve", describe_mix,
                    lambda budget=budget: resolve(search_state, budget, state))
        mixed = timed(f"budget {budget:g}: calibrate", None, lambda budget=budget, mix=mix: quantize_mix(
            model, calib, mix, "bfloat16", args.batch_size, work / f"mix-{budget}.pth", state.awq_block_size))
        if not args.no_export:
            timed(f"budget {budget:g}: export + verify", None, lambda budget=budget, mixed=mixed: export_and_verify(
                model, mixed, "bfloat16", work / f"mix-{budget}-checkpoint"))

    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"\n{model.name} on {device}; calibration {args.num_samples} × {args.seq_len}, batch {args.batch_size}; "
          f"plain fp8 {plain_effective_bits(model, 'fp8'):.2f} effective bits, candidates' minimum {floor:.2f}")
    reference = {"calibrate": rows[0]["seconds"]}
    if not args.no_export:
        reference["export + verify"] = rows[1]["seconds"]
    print("| part | seconds | / plain fp8 same part | peak GPU GiB | GPU GiB after | after gc.collect | result |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        part = next((k for k in reference if row["part"].endswith(k)), None)
        ratio = f"{row['seconds'] / reference[part]:.2f}" if part else "-"
        peak, after, collected = (f"{row[k]:.1f}" if row[k] is not None else "-"
                                  for k in ("peak_gpu_gib", "after_gpu_gib", "after_gc_gpu_gib"))
        print(f"| {row['part']} | {row['seconds']:.1f} | {ratio} | {peak} | {after} | {collected} | {row['result']} |")
    search = next(r for r in rows if r["part"].startswith("search"))
    print(f"search / plain fp8 calibration: {search['seconds'] / rows[0]['seconds']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
