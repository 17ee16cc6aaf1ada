"""A matrix build for real on the tiny random Llama: variants in separate processes reporting to the parent's
Prefect API, one shared calibration set and baseline, a refused variant shown with its reason, a comparison
in MLflow and a recommended version."""

from pathlib import Path

import pytest

from enginewright.cli import main
from enginewright.registry_client import registry_client
from enginewright.settings import Settings

pytestmark = pytest.mark.e2e


def test_matrix_builds_variants_apart_shares_the_baseline_and_recommends_one(
    tiny_model: Path, shared_data: Path, settings: Settings, capsys
) -> None:
    code = main(["matrix", "--model", str(tiny_model), "--quant", "fp8,int8_wo,nvfp4",
                 "--calib", str(shared_data / "calib" / "tiny_shakespeare.txt"), "--calib-samples", "4",
                 "--calib-seq-len", "32", "--tasks", "arc_easy", "--limit", "6", "--model-name", "tiny-matrix",
                 "--spec", str(write_spec(settings.home.parent / "matrix.yaml"))])
    out = capsys.readouterr().out
    assert code == 0, out

    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert rows["fp8"].split(" | ")[1] == "registered" and rows["int8_wo"].split(" | ")[1] == "registered"
    assert rows["nvfp4"].split(" | ")[1] == "refused" and "compute capability 9.0+" in rows["nvfp4"]

    client = registry_client(settings.tracking_uri)
    versions = {v.tags["quantization.format"]: v for v in client.search_model_versions("name = 'tiny-matrix'")}
    assert versions.keys() == {"fp8", "int8_wo"}
    recommended = client.get_model_version_by_alias("tiny-matrix", "recommended")
    assert recommended.tags["recommended.reason"].startswith(recommended.tags["quantization.format"] + ": the smallest bundle")
    matrix_run = client.get_run(recommended.tags["recommended.matrix_run"])
    assert {a.path for a in client.list_artifacts(matrix_run.info.run_id)} == {"comparison.md", "comparison.png"}

    # One calibration set for all variants; the variants' baselines came from the store the parent filled.
    assert len(list((settings.home / "calibration").glob("*/calibration.safetensors"))) == 1
    import json

    written = [json.loads(p.read_text()) for p in settings.builds_dir.glob("matrix-*/*/report.json")]
    # every variant writes its report, the refused one too: the comparison reads why from it, not from a log
    assert sorted(r["status"] for r in written) == ["refused", "registered", "registered"]
    assert [r["error"] for r in written if r["status"] == "refused"][0].startswith("quantization.format='nvfp4'")
    reports = [r for r in written if r["status"] == "registered"]
    assert len(reports) == 2 and all(r["baseline_seconds"] == 0 for r in reports)
    smallest = min(reports, key=lambda r: r["bundle_bytes"])
    assert str(recommended.version) == str(smallest["version"])
    assert smallest["bundle_bytes"] < max(r["bundle_bytes"] for r in reports)


def write_spec(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("source: {model: unused}\ngate: {max_drop_points: 100, smoke: false}\n")
    return path
