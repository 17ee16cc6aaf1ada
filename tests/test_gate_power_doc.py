"""docs/gate.md's figures are the ones benchmarks/gate_power.py computes — the power table, the first boundary of
the main job's plan and its error figures (a statistician found three of them written by hand and wrong): a change
to the statistics that moves a figure fails here until the doc is regenerated (`python benchmarks/gate_power.py`)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_figures_are_current() -> None:
    spec = importlib.util.spec_from_file_location("gate_power", ROOT / "benchmarks" / "gate_power.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (ROOT / "docs" / "gate.md").read_text()
    documented = doc.split("<!-- power-table:start -->\n")[1].split("\n<!-- power-table:end -->")[0]
    assert documented == module.power_table()
    assert doc.split("<!-- first-boundary -->")[1].split("<!-- /first-boundary -->")[0] == \
        module.first_boundary_sentence()
    assert doc.split("<!-- main-job-figures -->")[1].split("<!-- /main-job-figures -->")[0] == \
        module.main_job_sentence()
