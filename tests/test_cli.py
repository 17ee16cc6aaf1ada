"""Bad input: a one-line error naming the value and what is accepted, exit code 2, nothing registered."""

import shutil
from pathlib import Path

import pytest

from enginewright.cli import main
from enginewright.settings import Settings
from tests.conftest import copy_tree


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def base_args(tiny_model: Path, shared_data: Path) -> list[str]:
    return ["build", "--model", str(tiny_model), "--calib", str(shared_data / "calib" / "tiny_shakespeare.txt"),
            "--calib-samples", "4", "--calib-seq-len", "32", "--limit", "2"]


def bad_eval_dir(tmp_path: Path, shared_data: Path) -> str:
    data = tmp_path / "eval"
    shutil.copytree(shared_data / "eval" / "hellaswag", data / "hellaswag")
    return str(data)


def unreadable_checkpoint(tmp_path: Path, tiny_model: Path) -> str:
    copy = copy_tree(tiny_model, tmp_path / "broken")
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    return str(copy)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (lambda t, m, d: ["--model", str(t / "missing")], "source.model '{t}/missing' is not a directory"),
        (lambda t, m, d: ["--quant", "fp4"], "quantization.format: Input should be 'fp8', 'int8_sq', 'int4_awq', 'w4a8_awq', 'int8_wo', 'fp8_pcpt', 'nvfp4', 'nvfp4_awq', 'mxfp8' or 'mxfp4' (got 'fp4')"),
        (lambda t, m, d: ["--quant", "nvfp4"], "quantization.format='nvfp4' needs an NVIDIA GPU with compute capability 10.0+ (Blackwell) to calibrate; this worker has no CUDA GPU"),
        (lambda t, m, d: ["--calib-samples", "100000"], "fewer than calibration.num_samples=100000"),
        (lambda t, m, d: ["--tasks", "arc_easy,winogrande"], "evaluation.tasks.1: Input should be 'mmlu', 'arc_easy', 'arc_challenge' or 'hellaswag' (got 'winogrande')"),
        (lambda t, m, d: ["--tasks", "arc_easy", "--eval-data", bad_eval_dir(t, d)], "lacks arc_easy/train.jsonl needed by task 'arc_easy'"),
        (lambda t, m, d: ["--model", unreadable_checkpoint(t, m)], "checkpoint weights '{t}/broken/model.safetensors' are unreadable"),
        (lambda t, m, d: ["--calib", str(t / "nothing.txt")], "calibration.source '{t}/nothing.txt' does not exist"),
    ],
    ids=["missing-path", "unknown-format", "format-needs-blackwell", "too-few-calibration-samples", "unknown-task", "eval-data-missing-file",
         "unreadable-checkpoint", "missing-calibration"],
)
def test_bad_input_exits_2_with_one_line(
    extra, expected: str, base_args: list[str], tmp_path: Path, tiny_model: Path, shared_data: Path,
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_cli(base_args + extra(tmp_path, tiny_model, shared_data), capsys)
    assert code == 2
    assert err.startswith("enginewright: error: ") and "\n" not in err
    assert expected.format(t=tmp_path) in err
    assert not settings.home.joinpath("mlflow.db").exists()  # nothing registered, no store even created
    assert not settings.builds_dir.exists()


def test_default_model_missing_points_at_convert(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["build"], capsys)
    assert code == 2
    assert "run `enginewright convert-gguf` first" in err


def test_dry_run_prints_the_resolved_spec(base_args: list[str], settings: Settings, capsys) -> None:
    assert main(base_args + ["--quant", "int4_awq", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "format: int4_awq" in out and "num_samples: 4" in out
    assert not settings.builds_dir.exists()


def test_help_describes_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--quant", "--calib-samples", "--tasks", "--limit", "--eval-data", "--kv-quant"):
        assert flag in out
    assert "int4_awq (W4A16 AWQ)" in out


@pytest.mark.parametrize(("args", "expected"), [
    (["deploy", "no-such-model", "--version", "1"], "no-such-model version 1: Model Version (name=no-such-model, version=1) not found"),
    (["deploy", "m", "--target", "specs/targets/none.yaml"],
     "deploy target 'specs/targets/none.yaml' does not exist; pass a target YAML such as specs/targets/h100.yaml"),
    (["rollback", "no-such-model"], "no-such-model@production: Registered Model with name=no-such-model not found"),
    (["promote", "poll"], "promote poll needs a Prefect server: set PREFECT_API_URL"),
    (["promote", "webhook", "--url", "http://127.0.0.1:1/"], "promote webhook needs ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET"),
])
def test_deploy_and_promotion_bad_input_is_one_line_and_exit_2(args, expected, settings: Settings,
                                                               capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET", raising=False)
    code, err = run_cli(args, capsys)
    last = err.splitlines()[-1]  # before it, at most MLflow's note that it created a new local store's tables
    assert code == 2 and last.startswith(f"enginewright: error: {expected}"), err
    assert all(line.startswith(("enginewright: error:", "20")) for line in err.splitlines()), err
