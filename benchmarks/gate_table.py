"""The accuracy-gate table for several formats of one model: one build per format, in one process.

Builds run with the embedded default spec (SmolLM2-135M-Instruct, the shared data, its per-task limit)
except for the format, in a fresh ENGINEWRIGHT_HOME, so the first build also pays the baseline evaluation
that later builds reuse from the baseline store. Prints a markdown table.

    .venv/bin/python benchmarks/gate_table.py --quant fp8,int8_sq,int4_awq,w4a8_awq
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from enginewright.config.settings import Settings
from enginewright.ops.process_env import prepare_process

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
prepare_process(Settings())  # the CLI's Prefect/MLflow settings


def commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    return (done.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quant", default="fp8,int8_sq,int4_awq,w4a8_awq")
    parser.add_argument("--limit", type=int, default=None, help="override evaluation.limit")
    parser.add_argument("--tasks", default=None, help="override evaluation.tasks (comma-separated)")
    parser.add_argument("--look-size", default=None, help="override evaluation.look_size ('none': one look)")
    parser.add_argument("--model", default=None, help="checkpoint directory [default: the embedded default model]")
    args = parser.parse_args()
    os.environ.setdefault("ENGINEWRIGHT_HOME", tempfile.mkdtemp(prefix="enginewright-gate-table-"))

    from enginewright.config.settings import Settings
    from enginewright.config.spec import build_spec
    from enginewright.errors import GateFailed
    from flows.build import run_build

    settings = Settings()
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    default_model = Settings.model_fields["home"].default / "models" / "SmolLM2-135M-Instruct"
    evaluation: dict = {}
    if args.limit:
        evaluation["limit"] = args.limit
    if args.tasks:
        evaluation["tasks"] = args.tasks.split(",")
    if args.look_size:
        evaluation["look_size"] = None if args.look_size == "none" else int(args.look_size)
    rows = []
    for fmt in args.quant.split(","):
        overrides: dict = {"source": {"model": args.model or str(default_model)}, "quantization": {"format": fmt},
                           "evaluation": evaluation}
        spec = build_spec(settings, None, overrides)
        started = time.perf_counter()
        state = run_build(spec, settings)
        seconds = time.perf_counter() - started
        try:
            outcome = state.result()
            gate, dps = outcome.gate, f"{outcome.candidate.docs_per_second:.1f}"
        except GateFailed:  # a failed gate registers nothing, but its report is in the work dir
            report = max(settings.builds_dir.glob("*/gate/gate_report.json"), key=lambda p: p.stat().st_mtime)
            gate, dps = json.loads(report.read_text()), "–"  # (the newest report: this format's)
        for row in gate["tasks"]:
            rows.append((fmt, row, seconds, dps))

    print(f"\nlimit {spec.evaluation.limit} documents per task, looks of {spec.evaluation.look_size}, "
          f"{spec.calibration.num_samples} × {spec.calibration.seq_len} calibration tokens, gate max drop "
          f"{spec.gate.max_drop_points} points, commit {commit()}\n")
    print("| format | task | metric | documents | baseline % | candidate % | Δ points [interval] | p non-inf. | "
          "verdict | build wall s | candidate docs/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fmt, row, seconds, dps in rows:
        print(f"| {fmt} | {row['task']} | {row['metric']} | {row['n']}/{row['documents_planned']} | "
              f"{100 * row['baseline']:.1f} | {100 * row['candidate']:.1f} | {row['difference_points']:+.1f} "
              f"[{row['ci_low_points']:+.1f}, {row['ci_high_points']:+.1f}] | {row['p_noninferiority']:.3g} | "
              f"{row['verdict']} | {seconds:.0f} | {dps} |")


if __name__ == "__main__":
    main()
