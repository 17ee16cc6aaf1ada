"""docs/gate.md's power table is the one benchmarks/gate_power.py computes: a change to the statistics that moves
a figure fails here until the doc is regenerated (`python benchmarks/gate_power.py`)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_power_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gate_power", ROOT / "benchmarks" / "gate_power.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (ROOT / "docs" / "gate.md").read_text()
    documented = doc.split("<!-- power-table:start -->\n")[1].split("\n<!-- power-table:end -->")[0]
    assert documented == module.power_table()
