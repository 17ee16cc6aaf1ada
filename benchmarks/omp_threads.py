"""Why each pytest-xdist worker gets its share of the cores (tests/conftest.py): one bf16 matmul loop (SmolLM2's
MLP shapes) run alone and as two processes at once, with torch's default threads, with one thread each, and with
OpenMP's passive wait. Prints seconds per process; compare the rows of one run (docs/results.md, "The test suite on
two workers").

    .venv/bin/python benchmarks/omp_threads.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

LOOP = 3000


def loop(threads: int | None) -> float:
    import torch

    if threads:
        torch.set_num_threads(threads)
    x = torch.randn(64, 576, dtype=torch.bfloat16)
    up = [torch.nn.Linear(576, 1536, dtype=torch.bfloat16) for _ in range(4)]
    down = torch.nn.Linear(1536, 576, dtype=torch.bfloat16)
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(LOOP):
            down(up[i % 4](x))
    return time.perf_counter() - started


def run(processes: int, threads: int | None, env: dict[str, str]) -> list[float]:
    """Seconds of each of `processes` loops started at once."""
    command = [sys.executable, __file__, "--child", str(threads or 0)]
    children = [subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    return [float(child.communicate()[0]) for child in children]


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(f"{loop(int(sys.argv[2]) or None):.3f}")
        return
    cases = [("alone, torch's default threads", 1, None, {}), ("alone, one thread", 1, 1, {}),
             ("two at once, default threads", 2, None, {}), ("two at once, one thread each", 2, 1, {}),
             ("two at once, OMP_WAIT_POLICY=PASSIVE", 2, None, {"OMP_WAIT_POLICY": "PASSIVE"}),
             ("alone, OMP_WAIT_POLICY=PASSIVE", 1, None, {"OMP_WAIT_POLICY": "PASSIVE"})]
    print(f"{os.cpu_count()} cores; {LOOP} bf16 MLP steps per process\n\n| case | seconds per process |\n|---|---|")
    for name, processes, threads, env in cases:
        print(f"| {name} | {' / '.join(f'{s:.2f}' for s in run(processes, threads, env))} |")


if __name__ == "__main__":
    main()
