"""The accuracy-gate table for several formats of one model: one build per format, in one process.

Builds run with the embedded default spec (SmolLM2-135M-Instruct, the shared data, its per-task limit)
except for the format, in a fresh ENGINEWRIGHT_HOME, so the first build also pays the baseline evaluation
that later builds reuse from the baseline store. Prints a markdown table.

    .venv/bin/python benchmarks/gate_table.py --quant fp8,int8_sq,int4_awq,w4a8_awq
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from enginewright.process_env import prepare_process
from enginewright.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
prepare_process(Settings())  # the CLI's Prefect/MLflow settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quant", default="fp8,int8_sq,int4_awq,w4a8_awq")
    parser.add_argument("--limit", type=int, default=None, help="override evaluation.limit")
    args = parser.parse_args()
    os.environ.setdefault("ENGINEWRIGHT_HOME", tempfile.mkdtemp(prefix="enginewright-gate-table-"))

    from enginewright.settings import Settings
    from enginewright.spec import build_spec
    from flows.build import run_build

    settings = Settings()
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    default_model = Settings.model_fields["home"].default / "models" / "SmolLM2-135M-Instruct"
    rows = []
    for fmt in args.quant.split(","):
        overrides: dict = {"source": {"model": str(default_model)}, "quantization": {"format": fmt}}
        if args.limit:
            overrides["evaluation"] = {"limit": args.limit}
        spec = build_spec(settings, None, overrides)
        started = time.perf_counter()
        state = run_build(spec, settings)
        seconds = time.perf_counter() - started
        try:
            outcome = state.result()
            gate, candidate = outcome.gate, outcome.candidate
        except Exception as exc:  # a failed gate still has its report on disk
            print(f"{fmt}: {exc}")
            continue
        for row in gate["tasks"]:
            rows.append((fmt, row, seconds, candidate.docs_per_second))

    print(f"\nlimit {spec.evaluation.limit} documents per task, {spec.calibration.num_samples} × "
          f"{spec.calibration.seq_len} calibration tokens, gate max drop {spec.gate.max_drop_points} points\n")
    print("| format | task | metric | documents | baseline % | candidate % | Δ points [interval] | p non-inf. | "
          "verdict | build wall s | candidate docs/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fmt, row, seconds, dps in rows:
        print(f"| {fmt} | {row['task']} | {row['metric']} | {row['n']}/{row['documents_planned']} | "
              f"{100 * row['baseline']:.1f} | {100 * row['candidate']:.1f} | {row['difference_points']:+.1f} "
              f"[{row['ci_low_points']:+.1f}, {row['ci_high_points']:+.1f}] | {row['p_noninferiority']:.3g} | "
              f"{row['verdict']} | {seconds:.0f} | {dps:.1f} |")


if __name__ == "__main__":
    main()
