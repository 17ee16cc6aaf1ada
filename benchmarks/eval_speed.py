"""Candidate evaluation speed vs baseline: folding the weight quantizers (`mtq.fold_weight`), then fusing the static
FP8 activation quantizers (tasks/runtimes/simulated.py::fuse_fp8_activations).

For each format, in one process and on the same documents: the bf16 baseline, the candidate as ModelOpt
fake-quantizes it (weights quantized on every forward pass), with folded weights, and with folded weights and fused
FP8 activations (what a build evaluates). Prints docs/s and the candidate/baseline ratios, whether folded and
unfolded gave the same answers, and whether fused and folded gave the same log-likelihoods (bit for bit).

    .venv/bin/python benchmarks/eval_speed.py --quant fp8,int8_sq,int4_awq,w4a8_awq --limit 30
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    from common import evaluate_first

    from enginewright.config.settings import Settings
    from enginewright.config.spec import build_spec
    from enginewright.quant.models import load_model, load_tokenizer, pick_device
    from tasks.calibration import build_calibration_set
    from tasks.eval_data import check_eval_data
    from tasks.quantize import calibrate_and_quantize
    from tasks.runtimes.simulated import load_candidate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Settings().default_model_dir))
    parser.add_argument("--quant", default="fp8,int8_sq,int4_awq,w4a8_awq")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--tasks", default="arc_easy,hellaswag")
    args = parser.parse_args()

    settings = Settings()
    spec = build_spec(settings, None, {"source": {"model": args.model},
                                       "evaluation": {"limit": args.limit, "tasks": args.tasks.split(",")}})
    work = Path(tempfile.mkdtemp(prefix="enginewright-eval-speed-"))
    checkpoint = Path(args.model)
    data = check_eval_data(spec.evaluation.data_dir, list(spec.evaluation.tasks), 0)
    calib = build_calibration_set(spec.calibration, checkpoint, work / "calib.safetensors")
    tokenizer = load_tokenizer(checkpoint)

    def docs_per_second(model) -> tuple[float, list]:
        records, seconds = evaluate_first(model, tokenizer, spec.evaluation, data, work)
        return len(records) / seconds, records

    evaluate_first(load_model(checkpoint, spec.dtype), tokenizer, spec.evaluation, data, work)  # warm-up: task index
    baseline, _ = docs_per_second(load_model(checkpoint, spec.dtype))
    rows = []
    for fmt in args.quant.split(","):
        qspec = spec.quantization.model_copy(update={"format": fmt})
        state = calibrate_and_quantize(checkpoint, calib, qspec, spec.dtype, spec.calibration.batch_size,
                                       work / f"{fmt}.pth")
        unfolded, records_unfolded = docs_per_second(load_candidate(checkpoint, state, spec.dtype, fold=False,
                                                                    fuse=False))
        folded, records_folded = docs_per_second(load_candidate(checkpoint, state, spec.dtype, fold=True, fuse=False))
        fused, records_fused = docs_per_second(load_candidate(checkpoint, state, spec.dtype, fold=True))  # compiled at load
        same = [r["acc_norm"] for r in records_unfolded] == [r["acc_norm"] for r in records_folded]
        identical = [r["loglikelihoods"] for r in records_fused] == [r["loglikelihoods"] for r in records_folded]
        rows.append((fmt, unfolded, folded, same, fused, identical))

    print(f"\nmodel {args.model} on {pick_device()}, tasks {args.tasks}, limit {args.limit}, "
          f"batch {spec.evaluation.batch_size}, {spec.dtype}; baseline {baseline:.2f} docs/s\n")
    print("| format | fake-quant docs/s (ratio) | folded docs/s (ratio) | same answers | folded + fused FP8 docs/s "
          "(ratio) | same log-likelihoods |")
    print("|---|---|---|---|---|---|")
    for fmt, unfolded, folded, same, fused, identical in rows:
        print(f"| {fmt} | {unfolded:.2f} ({unfolded / baseline:.2f}) | {folded:.2f} ({folded / baseline:.2f}) | {same} "
              f"| {fused:.2f} ({fused / baseline:.2f}) | {identical} |")


if __name__ == "__main__":
    main()
