"""The terminal during a command: one line per step, our labelled bars, no traceback; the rest in the log file."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from enginewright.ops.console import step_line


def record(message: str, **extra: str) -> logging.LogRecord:
    made = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    made.created = 0.0
    return made


def test_step_lines_name_the_step_and_say_prefect_states_in_words() -> None:
    assert step_line(record("Finished in state Completed()", task_run_name="quantize-3fa", task_name="quantize")
                     ).endswith("  quantize                 done")
    assert step_line(record("Finished in state Cached(type=COMPLETED)", task_name="calibration-data")
                     ).endswith(" cached")
    skipped = "Finished in state Skipped('Skipped: no CUDA GPU on this worker', type=COMPLETED)"
    assert step_line(record(skipped, task_name="tensorrt-llm-build")).endswith(" skipped: no CUDA GPU on this worker")
    failed = record("Task run failed with exception: ValueError('x')\nTraceback (most recent call last):\n  ...",
                    task_name="evaluate")
    assert "Traceback" not in step_line(failed) and step_line(failed).endswith("ValueError('x')")
    assert " build_engine " in step_line(record("Beginning flow run", flow_run_name="busy-sloth",
                                                flow_name="build_engine"))


SCRIPT = """
import logging, sys, warnings
from pathlib import Path
from prefect import flow, task
from tqdm import tqdm
from enginewright.ops.console import progress_bar, to_log_file

@task(name="noisy-step")
def noisy():
    print("Inserted 56 quantizers")                      # a library's print
    warnings.warn("`torch_dtype` is deprecated!")         # a library's warning
    logging.getLogger("lm_eval.models.huggingface").warning("Please do not launch via accelerate")
    for _ in tqdm(range(3), desc="Running loglikelihood requests"):  # a library's bar
        pass
    for _ in progress_bar(range(3), desc="our labelled bar"):
        pass

@task(name="failing-step")
def failing():
    raise ValueError("the one line")

@flow(name="console-flow")
def main():
    noisy()
    failing()

with to_log_file(Path(sys.argv[1])):
    state = main(return_state=True)
print("after: " + type(state).__name__ + " " + state.name)
"""


def test_output_goes_to_the_log_and_the_terminal_gets_step_lines_without_tracebacks(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"})
    terminal = done.stdout + done.stderr
    assert "after: State Failed" in done.stdout, terminal
    assert "noisy-step" in terminal and " done" in terminal
    assert "failing-step" in terminal and "the one line" in terminal
    for noise in ("Traceback", "Inserted 56 quantizers", "torch_dtype", "launch via accelerate",
                  "Running loglikelihood requests", "Starting temporary server", "our labelled bar"):
        assert noise not in terminal, (noise, terminal)  # (our bar too: this terminal is a pipe, not a TTY)
    kept = log.read_text()
    for noise in ("Traceback", "ValueError: the one line", "Inserted 56 quantizers", "torch_dtype",
                  "launch via accelerate", "Running loglikelihood requests"):
        assert noise in kept, (noise, kept[-2000:])
