"""Import NVIDIA Model Optimizer once, on a thread of its own, before the first model is loaded.

Importing ModelOpt imports PuLP, whose optional solvers keep the ImportError each raised (pulp/apis/cplex_api.py,
copt_api.py: a class attribute `err`), and that traceback's frames reach back to whichever frames ran the import.
Imported first inside a function that holds a model, the model stayed referenced for the life of the process (13.8
GiB of an 8B model on the H200, docs/results.md; tests/test_quantize_export.py checks none survives). On a thread of
its own the kept frames are that thread's, which hold nothing.

Not imported with the task modules: ModelOpt is ~9 s of a no-change rerun's imports on the project's 2-core machine,
and a rerun whose steps are all cached loads no model. `enginewright.quant.models.load_model` calls this first.
"""

from __future__ import annotations

import sys
import threading

MODULES = ("modelopt.torch.quantization", "modelopt.torch.export", "modelopt.torch.opt")


def import_modelopt() -> None:
    """Import ModelOpt's quantization, export and state modules (at once when they already are)."""
    if all(name in sys.modules for name in MODULES):
        return
    failed: list[BaseException] = []

    def run() -> None:
        import importlib

        try:
            for name in MODULES:
                importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001  re-raised on the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="import-modelopt")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
