"""`registry_client` on a fresh SQLite store from several processes at once (what `enginewright matrix` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from enginewright.registry.registry_client import registry_client

_OPEN_AND_WRITE = """
import sys
from enginewright.registry.registry_client import registry_client
registry_client(sys.argv[1]).create_experiment(sys.argv[2])
"""


def test_processes_opening_one_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Without the lock, 3 of 4 such processes died in MLflow's migrations ("table _alembic_tmp_tags already
    # exists", "duplicate column name: step") in each of 3 tries on this machine.
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    processes = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_WRITE, uri, f"experiment-{i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
    outputs = [(p.wait(timeout=300), p.stdout.read()) for p in processes]
    assert [code for code, _ in outputs] == [0, 0, 0, 0], "\n".join(out[-2000:] for _, out in outputs)
    names = {e.name for e in registry_client(uri).search_experiments()}
    assert {f"experiment-{i}" for i in range(4)} <= names
