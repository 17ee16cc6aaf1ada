from pathlib import Path

import pytest

from enginewright.config.settings import Settings
from enginewright.config.spec import BuildSpec, build_spec, default_model_name
from enginewright.errors import InputError

SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"


def test_embedded_defaults_are_smollm2_fp8_on_shared_data(settings: Settings) -> None:
    spec = build_spec(settings)
    assert spec.source.model == str(settings.default_model_dir)
    assert spec.quantization.format == "fp8"
    assert Path(spec.calibration.source).parent == settings.shared_data_dir / "calib"
    assert spec.evaluation.data_dir == settings.shared_data_dir / "eval"
    assert spec.registry.model_name == "SmolLM2-135M-Instruct"


def test_overrides_win_over_file_which_wins_over_defaults(settings: Settings, tmp_path: Path) -> None:
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("quantization: {format: int8_sq}\nevaluation: {limit: 7, data_dir: ./data}\n")
    spec = build_spec(settings, spec_file, {"evaluation": {"limit": 3}})
    assert spec.quantization.format == "int8_sq"
    assert spec.evaluation.limit == 3
    assert spec.evaluation.data_dir == tmp_path / "data"  # relative to the spec file


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"quantization": {"format": "fp9"}}, "quantization.format: Input should be 'fp8', 'int8_sq', 'int4_awq'"),
        ({"evaluation": {"tasks": ["arc_easy", "gsm8k"]}}, "evaluation.tasks.1: Input should be 'mmlu'"),
        ({"calibration": {"num_samples": 0}}, "calibration.num_samples: Input should be greater than or equal to 1"),
        ({"quantization": {"formt": "fp8"}}, "quantization.formt: Extra inputs are not permitted"),
        ({"runtime": {"tokens_per_block": 48}}, "tokens_per_block must be a power of two, got 48"),
        ({"registry": {"model_name": "bad name!"}}, "registry.model_name: String should match pattern"),
    ],
)
def test_bad_values_give_one_line_naming_value_and_accepted(settings: Settings, override: dict, expected: str) -> None:
    with pytest.raises(InputError) as err:
        build_spec(settings, None, override)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_spec_file_errors(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        build_spec(settings, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(InputError, match="must hold a mapping"):
        build_spec(settings, bad)


@pytest.mark.parametrize("spec_file", sorted(SPECS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_parse(settings: Settings, spec_file: Path) -> None:
    spec = build_spec(settings, spec_file)
    assert isinstance(spec, BuildSpec)


def test_example_specs_exist() -> None:
    assert len(list(SPECS_DIR.glob("*.yaml"))) >= 3


def test_default_model_name() -> None:
    assert default_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert default_model_name("/models/llama/") == "llama"


def test_an_autoquantize_recipe_is_written_without_the_unused_format_and_a_plain_one_as_before() -> None:
    """What is written validates again (the matrix hands each variant its spec as YAML), and a one-format spec dumps
    exactly the fields it had before AutoQuantize existed, so its build key did not move."""
    from enginewright.config.spec import AutoQuantizeSpec, QuantizationSpec, variant_quantization

    plain = QuantizationSpec(format="int8_sq")
    assert set(plain.model_dump()) == {"format", "kv_cache", "awq_block_size"}
    auto = variant_quantization(plain, "auto-5.4")
    assert auto.auto == AutoQuantizeSpec(effective_bits=5.4) and auto.variant == "auto-5.4"
    assert "format" not in auto.model_dump() and QuantizationSpec.model_validate(auto.model_dump()) == auto
    assert auto.candidate_formats == ["fp8", "int4_awq"]
    again = variant_quantization(auto.model_copy(update={"auto": AutoQuantizeSpec(formats=["int8_sq"])}), "int4_awq")
    assert again.format == "int4_awq" and again.auto is None
    with pytest.raises(InputError, match="expected auto-<bits>"):
        variant_quantization(plain, "auto-lots")
