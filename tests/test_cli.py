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
    auto_bits = " ".join(out.split("--auto-bits EFFECTIVE_BITS")[-1].split("--quantization.auto.method", 1)[0].split())
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


def _subcommand(name: str):
    import argparse

    from enginewright.cli.main import parser

    top = parser()
    return next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_every_spec_field_is_a_build_flag_with_its_own_description() -> None:
    from enginewright.cli.spec_flags import ALIASES, spec_flags

    build = _subcommand("build")
    by_option = {option: action for action in build._actions for option in action.option_strings}
    flags = list(spec_flags())
    assert len(flags) >= 50  # every leaf of BuildSpec, quantization.auto's included
    for flag in flags:
        action = by_option[f"--{flag.path}"]
        assert (flag.info.description or "")[:40].replace("%", "%%") in action.help, flag.path
        if flag.path in ALIASES:
            assert by_option[ALIASES[flag.path]] is action
    assert set(ALIASES) <= {flag.path for flag in flags}  # an alias names a real field


def test_spec_flags_become_the_overrides_the_spec_validates(tmp_path: Path) -> None:
    from enginewright.cli.main import parser
    from enginewright.cli.spec_flags import overrides_from_args
    from enginewright.config.settings import Settings
    from enginewright.config.spec import build_spec

    args = parser().parse_args([
        "build", "--limit", "none", "--tasks", "arc_easy,hellaswag", "--no-gate.smoke", "--batch-size", "4",
        "--gate.tasks", '{"arc_easy": {"max_drop_points": 3}}', "--gate.smoke_prompts", "Hi, there",
        "--gate.smoke_prompts", "2 + 2 =", "--calibration.batch_size", "auto", "--auto-bits", "5.0"])
    overrides = overrides_from_args(args)
    assert overrides == {
        "evaluation": {"limit": None, "tasks": ["arc_easy", "hellaswag"], "batch_size": 4},
        "gate": {"smoke": False, "tasks": {"arc_easy": {"max_drop_points": 3}},
                 "smoke_prompts": ["Hi, there", "2 + 2 ="]},
        "calibration": {"batch_size": "auto"}, "quantization": {"auto": {"effective_bits": 5.0}}}
    spec = build_spec(Settings(), None, overrides)
    assert spec.gate.tasks["arc_easy"].max_drop_points == 3 and spec.quantization.auto is not None
    assert spec.evaluation.limit is None and spec.calibration.batch_size == "auto"


def test_the_matrix_takes_its_own_lists_instead_of_the_fields_a_variant_sets() -> None:
    matrix = _subcommand("matrix")
    options = {option for action in matrix._actions for option in action.option_strings}
    assert "--quantization.format" not in options and "--reevaluate" not in options
    assert {"--quant", "--auto-bits", "--auto-formats", "--policy"} <= options


def test_each_action_is_a_subcommand_argparse_checks(capsys) -> None:
    from enginewright.cli.main import main

    for argv, message in ((["stack", "sideways"], "invalid choice: 'sideways'"),
                          (["watch", "add", "org/model"], "the following arguments are required: --spec"),
                          (["pools", "render", "--gpu-class", "h100"], "unrecognized arguments: --gpu-class"),
                          (["promote", "webhook"], "the following arguments are required: --url")):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("enginewright ")
