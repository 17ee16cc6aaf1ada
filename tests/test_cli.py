"""The CLI around the build: the default model hint, --dry-run, --help. (Every bad input and its exact error:
docs/bad-input.md, tested row by row in tests/test_bad_input_table.py.)"""

from pathlib import Path

import pytest

from enginewright.cli.main import main
from enginewright.config.settings import Settings


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def base_args(tiny_model: Path, shared_data: Path) -> list[str]:
    return ["build", "--model", str(tiny_model), "--calib", str(shared_data / "calib" / "tiny_shakespeare.txt"),
            "--calib-samples", "4", "--calib-seq-len", "32", "--limit", "2"]


def test_default_model_missing_points_at_convert(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["build"], capsys)
    assert code == 2
    assert "run `enginewright convert-gguf` first" in err


def test_dry_run_prints_the_resolved_spec(base_args: list[str], settings: Settings, capsys) -> None:
    assert main(base_args + ["--quant", "int4_awq", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "format: int4_awq" in out and "num_samples: 4" in out
    # which runtime serves the format, from the serving table (vLLM's ModelOpt loader has no INT4-AWQ)
    assert "- TensorRT-LLM: ≥ 1.0 on any supported GPU" in out and "- vLLM: not served" in out
    assert not settings.builds_dir.exists()


def test_dry_run_prints_the_plan_power_and_limit_none_plans_every_document(
    base_args: list[str], settings: Settings, capsys
) -> None:
    args = [a if a != "2" or i != len(base_args) - 1 else "none" for i, a in enumerate(base_args)]
    assert main(args + ["--tasks", "arc_challenge", "--max-drop", "1", "--look-size", "100", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "limit: null" in captured.out
    row = next(line for line in captured.out.splitlines() if line.startswith("arc_challenge"))
    assert row.split()[1:3] == ["938", "938"]  # planned, available
    assert "fail if it drops" in captured.out and "% at 2.00 pts" in row  # the drop its fail power is computed at
    assert "the gate is underpowered: arc_challenge passes a harmless candidate with" in captured.err


def test_help_describes_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--quant", "--calib-samples", "--tasks", "--limit", "--eval-data", "--kv-quant"):
        assert flag in out
    assert "int4_awq (W4A16 AWQ)" in out
    auto_bits = " ".join(out.split("--auto-bits AUTO_BITS")[-1].split("--auto-formats", 1)[0].split())
    assert "none unless given" in auto_bits and "[default:" not in auto_bits  # AutoQuantize runs only when asked
    flat = " ".join(out.split()).replace("wikitext 2", "wikitext2")  # argparse wraps long words
    for embedded in ("--model MODEL Hugging Face repo id (org/name) or a local checkpoint directory. [default: "
                     "$ENGINEWRIGHT_HOME/models/SmolLM2-135M-Instruct]",
                     "[default: $ENGINEWRIGHT_SHARED_DATA_DIR/calib/wikitext2_train.txt]",
                     "[default: $ENGINEWRIGHT_SHARED_DATA_DIR/eval]"):
        assert embedded in flat, embedded  # the embedded defaults were hidden (issue 21)


def test_a_failed_build_writes_its_report_too(tiny_model: Path, shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The matrix learns why a variant failed from this report, never from scraping its log for 'error'."""
    import json

    from enginewright.cli.main import main

    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    report = tmp_path / "report.json"
    code = main(["build", "--model", str(tiny_model), "--calib", str(shared_data / "calib" / "tiny_shakespeare.txt"),
                 "--eval-data", str(shared_data / "eval"), "--quant", "nvfp4", "--report-json", str(report)])
    written = json.loads(report.read_text())
    assert code == 2 and written["status"] == "refused" and written["exit_code"] == 2
    assert written["error"].startswith("quantization.format='nvfp4' needs an NVIDIA GPU with compute capability 9.0+")
