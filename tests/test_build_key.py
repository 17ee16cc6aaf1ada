from pathlib import Path

from enginewright.build_key import compute_build_key
from enginewright.settings import Settings
from enginewright.spec import build_spec

TOOLS = {"nvidia-modelopt": "0.47.0", "transformers": "5.14.1", "torch": "2.13.0", "tensorrt-llm": "absent", "cuda": "none"}


def key_for(settings: Settings, overrides: dict, tools: dict = TOOLS, source: str = "local:abc"):
    return compute_build_key(source, build_spec(settings, None, overrides), "calibfp", tools)


def test_key_is_stable_and_ignores_paths_and_eval(settings: Settings, tmp_path: Path) -> None:
    base = key_for(settings, {})
    assert base.digest == key_for(settings, {}).digest
    # Where the calibration file lives, the eval settings and the batch size do not change the bundle.
    same = key_for(settings, {"calibration": {"source": str(tmp_path / "copy.txt"), "batch_size": 2},
                              "evaluation": {"limit": 5}})
    assert same.digest == base.digest


def test_differences_are_named(settings: Settings) -> None:
    base = key_for(settings, {})
    assert base.differences(key_for(settings, {"quantization": {"format": "int8_sq"}})) == ["recipe"]
    assert base.differences(key_for(settings, {"calibration": {"seed": 3}})) == ["recipe"]
    assert base.differences(key_for(settings, {}, source="local:def")) == ["source"]
    assert base.differences(key_for(settings, {}, tools={**TOOLS, "nvidia-modelopt": "0.48.0"})) == ["tools"]
    assert base.differences(base) == []
