"""Every name a benchmark imports from this project exists: benchmarks are run by hand, rarely, and two of them
had imported `tasks.evaluate.run_lm_eval` for months after it was gone (found only when someone ran them)."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
OURS = ("enginewright", "tasks", "flows", "common")


def project_imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_every_project_name_a_benchmark_imports_exists(script: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/<name>.py` has it
    for module, name in project_imports(script):
        imported = importlib.import_module(module)
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}") is not None, \
            f"{script.name}: `from {module} import {name}`: {module} has no {name}"
    sys.modules.pop("common", None)
