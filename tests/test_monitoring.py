"""The monitoring rendered with each release, checked by Prometheus' own promtool (Debian's `prometheus` package,
installed by scripts/setup.sh): the scrape config loads, the rules parse, and the rendered unit tests pass — a
healthy release alerts nothing, a sick one fires every rule with its version in the summary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.serving_config import render_release
from enginewright.serving.targets import DeployTarget

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert Path(PROMTOOL).is_file(), "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rendered(tmp_path: Path, runtime: str, engine: dict) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "checkpoint").mkdir(parents=True, exist_ok=True)
    (bundle / "llm_api.yaml").write_text("backend: pytorch\n")
    target = DeployTarget(name="h200", gpu="H200", compute_capability="9.0", runtime=runtime,
                          endpoint="http://serving-7:8000")
    release = tmp_path / f"release-{runtime}"
    render_release(bundle, {"bundle_id": "b" * 64, "quantization": {"format": "fp8"}, "engine": engine},  # type: ignore[arg-type]
                   target, "chat", "12", release)
    return release / "prometheus"


@pytest.mark.parametrize("runtime, engine, rules", [
    # the same six rules whether or not the build measured tokens/s on a GPU: no rule compares live traffic with a
    # saturation benchmark
    ("tensorrt_llm", {"status": "loaded", "bench": {"performance.system_output_throughput_tok_s": 5123.0}}, 6),
    ("tensorrt_llm", {"status": "skipped"}, 6),
    ("vllm", {"status": "skipped"}, 6),
])
def test_the_rendered_rules_pass_promtools_check_and_tests(tmp_path: Path, runtime: str, engine: dict, rules: int) -> None:
    folder = rendered(tmp_path, runtime, engine)
    checked = promtool("check", "rules", "alerts.yml", cwd=folder)
    assert checked.returncode == 0 and f"SUCCESS: {rules} rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml", cwd=folder)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = promtool("check", "config", "scrape.yml", cwd=folder)
    assert config.returncode == 0, config.stdout + config.stderr
    scrape = yaml.safe_load((folder / "scrape.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == RUNTIMES[runtime].metrics.metrics_path
    assert scrape["static_configs"][0]["targets"] == ["serving-7:8000"]
    for rule in yaml.safe_load((folder / "alerts.yml").read_text())["groups"][0]["rules"]:
        assert rule["annotations"]["summary"].endswith("chat version 12 on h200"), rule
        assert rule["labels"]["version"] == "12"


def test_promtools_tests_catch_a_rule_that_never_fires(tmp_path: Path) -> None:
    """The rendered tests can fail: a queue-depth threshold nobody reaches makes the sick case's alert missing."""
    folder = rendered(tmp_path, "tensorrt_llm", {"status": "skipped"})
    alerts = folder / "alerts.yml"
    alerts.write_text(alerts.read_text().replace("trtllm_num_requests_waiting{job=\"h200-chat\"}) > 32",
                                                 "trtllm_num_requests_waiting{job=\"h200-chat\"}) > 100000"))
    tested = promtool("test", "rules", "alerts_test.yml", cwd=folder)
    assert tested.returncode != 0 and "ReleaseQueueDeep" in tested.stdout + tested.stderr
