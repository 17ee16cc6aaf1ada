"""The gate catching a broken candidate, on the real SmolLM2-135M-Instruct and real lm-eval runs.

The candidate is broken the way real ones are: INT8 SmoothQuant calibrated on text of one repeated word,
so its static activation scales clip every other input. The smoke check catches it before the long
evaluation; with the smoke check off, the paired accuracy gate does.
"""

from pathlib import Path

import pytest

from enginewright.cli.main import main
from enginewright.config.settings import Settings
from enginewright.registry.registry_client import registry_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def broken_build(smollm2: Path, degenerate_calibration: Path, tmp_path: Path):
    def args(smoke: bool) -> list[str]:
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"gate:\n  smoke: {str(smoke).lower()}\n  max_drop_points: 1.0\n")
        return ["build", "--spec", str(spec), "--model", str(smollm2), "--quant", "int8_sq",
                "--calib", str(degenerate_calibration), "--calib-samples", "2", "--calib-seq-len", "32",
                "--tasks", "hellaswag,arc_easy", "--limit", "60", "--model-name", "smol-broken"]
    return args


def test_smoke_check_fails_a_broken_candidate_at_once(broken_build, settings: Settings, capsys) -> None:
    assert main(broken_build(smoke=True)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("enginewright: error: smoke check failed before evaluation: candidate continuation "
                          "empty or repetitive on")
    assert not (settings.builds_dir / next(settings.builds_dir.iterdir()).name / "evaluation").exists()


def test_accuracy_gate_fails_a_broken_candidate_and_keeps_the_evidence(
    broken_build, settings: Settings, capsys
) -> None:
    assert main(broken_build(smoke=False)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("enginewright: error: gate failed: ")
    assert "acc_norm changed -" in err and "allowed drop 1.00" in err and "no version registered" in err

    client = registry_client(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("enginewright-builds").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["gate.verdict"] == "fail"
    assert run.data.metrics["gate.hellaswag.ci_high_points"] < -1.0 or run.data.metrics["gate.arc_easy.ci_high_points"] < -1.0
    assert {a.path for a in client.list_artifacts(run.info.run_id, "gate")} == {"gate/gate_report.json", "gate/gate_plot.png"}
    assert client.search_model_versions("name = 'smol-broken'") == []
