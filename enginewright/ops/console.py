"""What a person at the terminal sees while a command works: one line per step and enginewright's own labelled
progress bars. Everything else (Prefect's records and tracebacks, the temporary server's banner, lm-eval's,
transformers' and ModelOpt's warnings, prints and progress bars) goes to the command's log file.

`to_log_file(path)` redirects file descriptors 1 and 2 into the log (so library output goes there whichever way
it is written: `print`, a handler holding `sys.stderr`, C code) and keeps a duplicate of the terminal for
`StepLines` and `progress_bar`. The terminal is process state by nature: the one module-level holder is here.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

_TERMINAL: list[TextIO] = []  # the terminal while output goes to a log file (innermost last)
STEP_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # where our flows' and tasks' run loggers write
_FINISHED = re.compile(r"^Finished in state (\w+)\((.*)\)$")


def terminal() -> TextIO:
    """The person's terminal: the saved one while output goes to a log file, else stderr."""
    return _TERMINAL[-1] if _TERMINAL else sys.stderr


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """An enginewright progress bar (label it with `desc`): on the terminal, and silent when that is not a
    terminal (a CI log, a worker) instead of filling it with carriage returns."""
    stream = terminal()
    quiet = not stream.isatty()
    return tqdm(iterable, file=io.StringIO() if quiet else stream, disable=quiet, **kwargs)


def step_line(record: logging.LogRecord) -> str:
    """`14:02:11  quantize            done`: the step's name without Prefect's run suffix, the message's first line
    (never a traceback), Prefect's final-state messages in words."""
    extra = record.__dict__  # Prefect's run loggers add these (prefect/logging/loggers.py task_run_logger)
    step = str(extra.get("task_name") or extra.get("flow_name") or record.name)
    if step == "<unknown>":
        step = re.sub(r"-[0-9a-f]{3}$", "", str(extra.get("task_run_name", record.name)))
    message = record.getMessage().splitlines()[0] if record.getMessage() else ""
    finished = _FINISHED.match(message)
    if finished:
        state, detail = finished.groups()
        message = {"Completed": "done", "Cached": "cached"}.get(state, state.lower())
        reason = re.match(r"^'(?:Skipped: )?(.*?)'", detail)
        if state not in ("Completed", "Cached") and reason:
            message += f": {reason.group(1)}"
    clock = time.strftime("%H:%M:%S", time.localtime(record.created))
    return f"{clock}  {step:<24} {message}"


class StepLines(logging.Handler):
    """Our flows' and tasks' records as step lines on the terminal (INFO and up)."""

    def __init__(self, stream: TextIO):
        super().__init__(level=logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(step_line(record) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 (a display problem must never fail the build)
            self.handleError(record)


def log_path(home: Path, command: str) -> Path:
    return home / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


@contextmanager
def to_log_file(path: Path) -> Iterator[TextIO]:
    """Inside: fd 1 and 2 write to `path`, our step lines and bars to the terminal (yielded). Python warnings are
    logged (and so land in the file too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    screen = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = StepLines(screen)
    with path.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        for name in STEP_LOGGERS:
            logging.getLogger(name).addHandler(handler)
        logging.captureWarnings(True)
        _TERMINAL.append(screen)
        try:
            yield screen
        finally:
            _TERMINAL.pop()
            logging.captureWarnings(False)
            for name in STEP_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            screen.close()


@contextmanager
def command_log(home: Path, command: str) -> Iterator[Path]:
    """A command's work with its output in a log file: the terminal gets step lines, and on failure the path of the
    log beside the one-line error."""
    log = log_path(home, command)
    print(f"log: {log} (Prefect's records, tracebacks and the libraries' output)", file=sys.stderr)
    try:
        with to_log_file(log):
            yield log
    except BaseException:
        print(f"full log: {log}", file=sys.stderr)
        raise
