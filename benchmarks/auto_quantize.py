"""AutoQuantize's cost against a plain format, side by side in one run (issue 15): a plain FP8 quantize + export +
verification, then ModelOpt's search (once) and, for each effective-bits budget, its re-solve, calibration and
export + verification. Prints a table: seconds of each part, the bits each budget achieved and its format mix,
and the marginal cost of each budget after the first as a ratio to the plain format's quantize + export.

    python benchmarks/auto_quantize.py --model ~/.enginewright/models/SmolLM2-135M-Instruct \\
        --calib ../shared/data/calib/wikitext2_train.txt --work DIR
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--candidates", default="fp8,int4_awq")
    parser.add_argument("--method", choices=["gradient", "kl_div"], default="gradient")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--score-steps", type=int, default=8, help="batches scored")
    parser.add_argument("--budgets", default="auto", help="comma-separated bits; auto: three between the "
                        "candidates' minimum and halfway to 16")
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from enginewright.spec import CalibrationSpec, QuantizationSpec
    from tasks.auto_quantize import (
        load_search_state,
        minimum_effective_bits,
        quantize_mix,
        resolve,
        run_search,
        search_key,
    )
    from tasks.calibration import build_calibration_set
    from tasks.export import export_and_verify
    from tasks.quantize import calibrate_and_quantize

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    calib = build_calibration_set(CalibrationSpec(source=str(args.calib), num_samples=args.num_samples,
                                                  seq_len=args.seq_len), args.model, work / "calib.safetensors")
    candidates = [c.strip() for c in args.candidates.split(",")]
    rows: list[tuple[str, float, str]] = []

    started = time.perf_counter()
    plain = calibrate_and_quantize(args.model, calib, QuantizationSpec(format="fp8"), "bfloat16", args.batch_size,
                                   work / "fp8.pth")
    quantized = time.perf_counter()
    export_and_verify(args.model, plain, "bfloat16", work / "fp8-checkpoint")
    plain_seconds = time.perf_counter() - started
    rows.append(("fp8: quantize", quantized - started, ""))
    rows.append(("fp8: export + verify", plain_seconds - (quantized - started), ""))

    key = search_key(f"local:{args.model}", calib, candidates, args.method, args.score_steps, ["*lm_head*"])
    started = time.perf_counter()
    state = run_search(args.model, calib, candidates, args.method, args.score_steps, args.batch_size, "bfloat16",
                       work / "searches", key, ["*lm_head*"])
    search_seconds = time.perf_counter() - started
    rows.append((f"search ({', '.join(candidates)}; {args.method}, {args.score_steps} batches scored)",
                 search_seconds, ""))
    search_state = load_search_state(state)
    floor = minimum_effective_bits(search_state)
    budgets = ([round(floor + k * (16 - floor) / 8, 2) for k in (1, 2, 3)] if args.budgets == "auto"
               else [float(b) for b in args.budgets.split(",")])
    per_budget = []
    for budget in budgets:
        started = time.perf_counter()
        mix = resolve(search_state, budget, state)
        solved = time.perf_counter()
        mixed = quantize_mix(args.model, calib, mix, "bfloat16", args.batch_size, work / f"mix-{budget}.pth")
        export_and_verify(args.model, mixed, "bfloat16", work / f"mix-{budget}-checkpoint")
        seconds = time.perf_counter() - started
        per_budget.append(seconds)
        counts = Counter(mix.groups.values())
        rows.append((f"budget {budget}: re-solve + quantize + export + verify", seconds,
                     f"{mix.effective_bits:.2f} bits achieved; groups: "
                     + ", ".join(f"{n} {f}" for f, n in sorted(counts.items())) + f" (re-solve {solved - started:.2f} s)"))

    print(f"\n{args.model.name} on {'cuda' if torch.cuda.is_available() else 'cpu'}; calibration {args.num_samples} × "
          f"{args.seq_len}, batch {args.batch_size}; candidates' minimum {floor:.2f} effective bits")
    print("| step | seconds | result |\n|---|---|---|")
    for name, seconds, result in rows:
        print(f"| {name} | {seconds:.1f} | {result} |")
    first = search_seconds + per_budget[0]
    print(f"first budget (search + its build) / plain fp8 quantize + export + verify: {first / plain_seconds:.2f}")
    for budget, seconds in zip(budgets[1:], per_budget[1:], strict=True):
        print(f"marginal cost of budget {budget} / plain fp8 quantize + export + verify: {seconds / plain_seconds:.2f}")


if __name__ == "__main__":
    main()
