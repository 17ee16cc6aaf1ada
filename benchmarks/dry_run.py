"""How fast `enginewright build --dry-run` answers, beside what it used to import to answer.

Each row is a fresh process, run `--repeat` times (median shown), all in this one run on this machine:
- `build --dry-run` on the embedded default spec (SmolLM2-135M-Instruct, the shared data);
- the imports the preflight no longer needs, each alone: torch, transformers' AutoTokenizer (the build's
  tokenizer), and transformers' modeling_auto (where the causal-LM model types live).
The ratio column is each row over the dry run. Goal (issue 21): the dry run answers in ≤ 3 s on this 2-core machine.

    .venv/bin/python benchmarks/dry_run.py               # needs `enginewright convert-gguf` first
    .venv/bin/python benchmarks/dry_run.py --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
ROWS = {
    "build --dry-run (embedded default)": [str(VENV_BIN / "enginewright"), "build", "--dry-run"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import transformers AutoTokenizer": [sys.executable, "-c", "from transformers import AutoTokenizer"],
    "import transformers modeling_auto": [sys.executable, "-c", "import transformers.models.auto.modeling_auto"],
}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    medians = {name: statistics.median(seconds(cmd) for _ in range(args.repeat)) for name, cmd in ROWS.items()}
    dry = medians["build --dry-run (embedded default)"]
    print(f"{'process':<40}{'median s':>10}{'× dry run':>11}")
    for name, value in medians.items():
        print(f"{name:<40}{value:>10.2f}{value / dry:>11.2f}")


if __name__ == "__main__":
    main()
