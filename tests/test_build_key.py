from pathlib import Path

from enginewright.config.settings import Settings
from enginewright.config.spec import build_spec
from enginewright.keys.build_key import compute_build_key

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


def test_a_known_spec_whose_key_moved_is_explained_part_by_part(settings: Settings) -> None:
    from tasks.plan import plan_build

    spec = build_spec(settings, None, {})
    messages: list[str] = []
    first = plan_build(spec, "local:abc", "calibfp", settings.builds_dir, messages.append)
    assert first.changed_since_last is None and first.work.path.is_dir()

    again = plan_build(spec, "local:abc", "calibfp", settings.builds_dir, messages.append)
    assert again.changed_since_last == [] and again.work == first.work

    moved = plan_build(spec, "local:def", "calibfp2", settings.builds_dir, messages.append)
    assert moved.changed_since_last == ["calibration_data", "source"]
    assert messages[-1].endswith("changed since its last build: calibration_data, source differ, "
                                 "so the steps keyed by them recompute")
    assert moved.work.path != first.work.path
