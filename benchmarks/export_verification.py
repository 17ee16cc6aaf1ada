"""Export verification's cost in a build: the export step with verification (tasks/export.py export_and_verify,
what a build runs) against the same export without it, per format, same run, same machine. Goal: the added time
/ export time ≤ 0.2.

    .venv/bin/python benchmarks/export_verification.py [--model DIR] [--formats fp8,int8_sq,...]

Calibration is small (8 × 128 tokens) because only the export and its verification are timed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FORMATS = "fp8,int8_sq,int4_awq,w4a8_awq,int8_wo,fp8_pcpt"


def main() -> None:
    from enginewright.config.settings import Settings
    from enginewright.config.spec import CalibrationSpec, QuantizationSpec
    from tasks.calibration import build_calibration_set
    from tasks.export import export_and_verify, export_checkpoint
    from tasks.quantize import calibrate_and_quantize

    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=settings.default_model_dir)
    parser.add_argument("--formats", default=FORMATS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        calib = build_calibration_set(
            CalibrationSpec(source=str(settings.shared_data_dir / "calib" / "wikitext2_train.txt"), num_samples=8,
                            seq_len=128), args.model, root / "calib.safetensors")
        rows = []
        for fmt in args.formats.split(","):
            state = calibrate_and_quantize(args.model, calib, QuantizationSpec(format=fmt), "bfloat16", 4,
                                           root / f"{fmt}.pth")
            started = time.perf_counter()
            export_checkpoint(args.model, state, "bfloat16", root / f"{fmt}-plain")
            exported = time.perf_counter()
            verified = export_and_verify(args.model, state, "bfloat16", root / f"{fmt}-verified").verification
            done = time.perf_counter()
            plain, with_verify = exported - started, done - exported
            rows.append((fmt, plain, with_verify - plain, verified))
    print(f"\nmodel: {args.model.name}, CPU ({os.cpu_count()} cores)\n")
    print("| format | export s | + verification s | added / export | tensors | scales | codes one step apart |")
    print("|---|---|---|---|---|---|---|")
    for fmt, export_s, verify_s, v in rows:
        print(f"| {fmt} | {export_s:.1f} | {verify_s:.1f} | {verify_s / export_s:.2f} | {v.tensors} | {v.scales} | "
              f"{100 * v.codes_differing:.2f} % |")


if __name__ == "__main__":
    main()
