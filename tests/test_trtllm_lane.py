"""The TensorRT-LLM lane's side of the boundary, driven by stand-ins for TensorRT-LLM and trtllm-bench
(tests/standins: this machine has no GPU and cannot install TensorRT-LLM). What is checked is our code: which
calls it makes, with which arguments, in which order, and what it records. TensorRT-LLM itself is unverified."""

import json
import os
from pathlib import Path

import pytest

from enginewright.environment import key_tool_versions
from enginewright.errors import EnginewrightError
from enginewright.spec import RuntimeSpec
from tasks.runtime_config import write_llm_api_yaml

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture
def lane(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import sys

    import tasks.trtllm_build as lane

    monkeypatch.syspath_prepend(str(STANDINS))
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("PATH", f"{STANDINS / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TRTLLM_BENCH_STANDIN_LOG", str(tmp_path / "bench.log"))
    monkeypatch.setattr(lane.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(lane.torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(lane, "tensorrt_llm_version", lambda: "1.2.0")
    monkeypatch.setattr(lane, "tensorrt_version", lambda: "10.13.3")
    return lane


def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "checkpoint").mkdir(parents=True)
    write_llm_api_yaml(RuntimeSpec(max_batch_size=16, tokens_per_block=64), True, root / "llm_api.yaml")
    return root


def test_the_bundle_is_loaded_with_its_llm_api_yaml_warmed_up_smoke_generated_and_benchmarked(lane, tmp_path) -> None:
    import tensorrt_llm

    root = bundle(tmp_path)
    result = lane.run_engine_lane(root, ["a", "b"], 12, legacy_engine=False, max_batch_size=16, max_num_tokens=2048,
                                  model_name="tiny", work=tmp_path / "work")
    names = [name for name, _ in tensorrt_llm.CALLS]
    assert names == ["LLM", "generate", "generate", "shutdown"]
    kwargs = tensorrt_llm.CALLS[0][1]
    assert kwargs["model"] == str(root / "checkpoint") and "backend" not in kwargs
    assert kwargs["kv_cache_config"]["tokens_per_block"] == 64 and kwargs["kv_cache_config"]["dtype"] == "fp8"
    assert kwargs["max_batch_size"] == 16
    warmup, smoke = tensorrt_llm.CALLS[1][1], tensorrt_llm.CALLS[2][1]
    assert warmup[0] == ["a"] and smoke[0] == ["a", "b"] and smoke[1].max_tokens == 12 and smoke[1].temperature == 0
    assert result["status"] == "loaded" and result["tensorrt_llm"] == "1.2.0"
    assert result["smoke_degenerate"] == "0 of 2"
    assert result["bench.performance.request_throughput_req_s"] == 12.5
    assert "bench.performance.total_latency_ms" not in result
    prepare, throughput = (json.loads(line) for line in (tmp_path / "bench.log").read_text().splitlines())
    assert prepare[:4] == ["--model", "tiny", "--model_path", str(root / "checkpoint")] and "prepare-dataset" in prepare
    assert throughput[throughput.index("--config") + 1] == str(root / "llm_api.yaml")
    assert throughput[throughput.index("--backend") + 1] == "pytorch"
    assert not (root / "engine").exists()


def test_the_legacy_lane_builds_an_engine_only_on_tensorrt_llm_up_to_1_2(lane, tmp_path, monkeypatch) -> None:
    root = bundle(tmp_path)
    result = lane.run_engine_lane(root, ["a"], 4, legacy_engine=True, max_batch_size=8, max_num_tokens=1024,
                                  model_name="tiny", work=tmp_path / "work")
    assert (result["status"], result["compute_capability"], result["tensorrt"]) == ("built", "9.0", "10.13.3")
    assert sorted(p.name for p in (root / "engine").iterdir()) == ["config.json", "rank0.engine"]
    assert not (root / "engine.partial").exists()

    monkeypatch.setattr(lane, "tensorrt_llm_version", lambda: "1.3.0")
    with pytest.raises(EnginewrightError, match="needs TensorRT-LLM ≤ 1.2.*this worker has 1.3.0"):
        lane.run_engine_lane(bundle(tmp_path / "other"), ["a"], 4, legacy_engine=True, max_batch_size=8,
                             max_num_tokens=1024, model_name="tiny", work=tmp_path / "work2")


def test_without_a_gpu_the_lane_is_skipped_and_says_an_asked_for_engine_was_not_built(tmp_path) -> None:
    import tasks.trtllm_build as lane

    result = lane.run_engine_lane(bundle(tmp_path), ["a"], 4, legacy_engine=True, max_batch_size=8,
                                  max_num_tokens=1024, model_name="tiny", work=tmp_path / "work")
    assert result["status"] == "skipped"
    assert result["reason"] == "no CUDA GPU on this worker; runtime.legacy_engine asked for an engine, none was built"


def test_an_engine_target_puts_the_gpu_and_tensorrt_version_into_the_build_key() -> None:
    assert "gpu_sm" not in key_tool_versions()
    assert {"gpu_sm", "tensorrt"} <= key_tool_versions(engine_target=True).keys()

