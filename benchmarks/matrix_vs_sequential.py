"""Wall time of a matrix build vs the same variants built one after another, on this machine.

Both start from an empty ENGINEWRIGHT_HOME (no baseline store, no cache) and use the same flags; the
sequential builds share what a user's consecutive builds share (the baseline store, the calibration set).

    .venv/bin/python benchmarks/matrix_vs_sequential.py --quant fp8,int8_sq,int4_awq,w4a8_awq
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], home: Path) -> float:
    env = {**os.environ, "ENGINEWRIGHT_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "enginewright.cli.main", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    from enginewright.config.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quant", default="fp8,int8_sq,int4_awq,w4a8_awq")
    parser.add_argument("--model", default=str(Settings().default_model_dir))
    parser.add_argument("--flags", default="--calib-samples 8 --calib-seq-len 128 --tasks arc_easy --limit 50")
    args = parser.parse_args()
    formats = args.quant.split(",")
    common = ["--model", args.model, *args.flags.split()]
    root = Path(tempfile.mkdtemp(prefix="enginewright-matrix-bench-"))

    matrix_s = run(["matrix", "--quant", args.quant, *common], root / "matrix-home")
    sequential = {fmt: run(["build", "--quant", fmt, *common], root / "sequential-home") for fmt in formats}
    total = sum(sequential.values())
    cores = os.cpu_count()
    print(f"\n{len(formats)} variants ({args.quant}), {args.flags}; {cores} CPU cores, no GPU\n")
    print(f"{'run':<34}{'seconds':>9}")
    for fmt, seconds in sequential.items():
        print(f"{'build ' + fmt:<34}{seconds:>9.1f}")
    print(f"{'sum of sequential builds':<34}{total:>9.1f}")
    print(f"{'matrix (all variants in parallel)':<34}{matrix_s:>9.1f}")
    print(f"\nmatrix / sequential: {matrix_s / total:.2f}")


if __name__ == "__main__":
    main()
