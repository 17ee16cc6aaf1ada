"""The TensorRT-LLM lane's side of the boundary, driven by stand-ins for TensorRT-LLM and trtllm-bench
(tests/standins: this machine has no GPU and cannot install TensorRT-LLM). What is checked is our code: which
calls it makes, with which arguments, in which order, and what it records. TensorRT-LLM itself is unverified."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enginewright.config.spec import RuntimeSpec
from enginewright.errors import EnginewrightError
from enginewright.keys.environment import key_tool_versions
from enginewright.serving.runtimes.tensorrt_llm import (
    OUTPUT_THROUGHPUT,
    ContractError,
    check_bench_argv,
    check_llm_api_options,
    check_serve_argv,
)
from tasks.runtime_config import llm_api_options, write_llm_api_yaml

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture
def lane(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):

    import tasks.trtllm_build as lane

    monkeypatch.syspath_prepend(str(STANDINS))
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    # The stand-in CLI runs under this interpreter (it imports the contract from enginewright).
    path = os.pathsep.join([str(STANDINS / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    monkeypatch.setenv("PATH", path)
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
                                  work=tmp_path / "work")
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
    # the key the matrix's `fastest` policy reads is the real report's key
    assert OUTPUT_THROUGHPUT in result["bench"] and "performance.total_latency_ms" not in result["bench"]
    prepare, throughput = (json.loads(line) for line in (tmp_path / "bench.log").read_text().splitlines())
    # --model is the checkpoint: prepare-dataset loads its tokenizer from --model first, offline
    assert prepare[:4] == ["--model", str(root / "checkpoint"), "--model_path", str(root / "checkpoint")]
    assert "prepare-dataset" in prepare
    assert throughput[throughput.index("--extra_llm_api_options") + 1] == str(root / "llm_api.yaml")
    assert throughput[throughput.index("--backend") + 1] == "pytorch"
    assert not (root / "engine").exists()


def test_the_legacy_lane_builds_an_engine_only_on_tensorrt_llm_up_to_1_2(lane, tmp_path, monkeypatch) -> None:
    root = bundle(tmp_path)
    result = lane.run_engine_lane(root, ["a"], 4, legacy_engine=True, max_batch_size=8, max_num_tokens=1024,
                                  work=tmp_path / "work")
    assert (result["status"], result["compute_capability"], result["tensorrt"]) == ("built", "9.0", "10.13.3")
    assert sorted(p.name for p in (root / "engine").iterdir()) == ["config.json", "rank0.engine"]
    assert not (root / "engine.partial").exists()

    # The engine backend ships up to 1.3.0rc20 (not only the 1.2 line) and is gone after it.
    monkeypatch.setattr(lane, "tensorrt_llm_version", lambda: "1.3.0rc20")
    assert lane.run_engine_lane(bundle(tmp_path / "rc20"), ["a"], 4, legacy_engine=True, max_batch_size=8,
                                max_num_tokens=1024, work=tmp_path / "work-rc20")["status"] == "built"
    monkeypatch.setattr(lane, "tensorrt_llm_version", lambda: "1.3.0rc21")
    with pytest.raises(EnginewrightError, match="needs TensorRT-LLM ≤ 1.3.0rc20.*this worker has 1.3.0rc21"):
        lane.run_engine_lane(bundle(tmp_path / "other"), ["a"], 4, legacy_engine=True, max_batch_size=8,
                             max_num_tokens=1024, work=tmp_path / "work2")


def test_without_a_gpu_the_lane_is_skipped_and_says_an_asked_for_engine_was_not_built(tmp_path) -> None:
    import tasks.trtllm_build as lane

    result = lane.run_engine_lane(bundle(tmp_path), ["a"], 4, legacy_engine=True, max_batch_size=8,
                                  max_num_tokens=1024, work=tmp_path / "work")
    assert result["status"] == "skipped"
    assert result["reason"] == "no CUDA GPU on this worker; runtime.legacy_engine asked for an engine, none was built"


def test_an_engine_target_puts_the_gpu_and_tensorrt_version_into_the_build_key() -> None:
    assert "gpu_sm" not in key_tool_versions()
    assert {"gpu_sm", "tensorrt"} <= key_tool_versions(engine_target=True).keys()



@pytest.mark.parametrize("runtime", [
    RuntimeSpec(), RuntimeSpec(cuda_graphs=False, max_seq_len=4096, kv_cache_host_bytes=1 << 30),
    RuntimeSpec(scheduler_policy="MAX_UTILIZATION", enable_block_reuse=False, tensor_parallel_size=2),
])
@pytest.mark.parametrize("kv_fp8", [False, True])
def test_every_rendered_llm_api_yaml_is_what_tensorrt_llm_takes(runtime: RuntimeSpec, kv_fp8: bool) -> None:
    options = check_llm_api_options(llm_api_options(runtime, kv_fp8))
    assert options.kv_cache_config.dtype == ("fp8" if kv_fp8 else "auto")


def test_the_contract_refuses_what_tensorrt_llm_would_refuse() -> None:
    with pytest.raises(ContractError, match="'kv_cache_config.tokens_per_blok': Extra inputs are not permitted"):
        check_llm_api_options({"kv_cache_config": {"tokens_per_blok": 64}})
    with pytest.raises(ContractError, match="'scheduler_config.capacity_scheduler_policy'"):
        check_llm_api_options({"scheduler_config": {"capacity_scheduler_policy": "FIFO"}})
    base = ["--model", "/m", "--model_path", "/m"]
    check_bench_argv([*base, "throughput", "--dataset", "d.jsonl", "--extra_llm_api_options", "x.yaml"])
    with pytest.raises(ContractError, match="trtllm-bench throughput does not take '--config'"):
        check_bench_argv([*base, "throughput", "--config", "x.yaml"])  # an alias only on newer lines
    with pytest.raises(ContractError, match="trtllm-bench needs --model"):
        check_bench_argv(["throughput"])
    with pytest.raises(ContractError, match="prepare-dataset token-norm-dist needs --input-stdev"):
        check_bench_argv([*base, "prepare-dataset", "token-norm-dist", "--num-requests", "1", "--input-mean", "8",
                          "--output-mean", "8", "--output-stdev", "0"])
    check_serve_argv(["trtllm-serve", "/b/checkpoint", "--host", "0.0.0.0", "--extra_llm_api_options", "x.yaml"])
    with pytest.raises(ContractError, match="trtllm-serve does not take '--extra-llm-api-options'"):
        check_serve_argv(["trtllm-serve", "/b/checkpoint", "--extra-llm-api-options", "x.yaml"])


def test_the_bench_stand_in_refuses_a_registry_name_as_model_as_the_real_tool_would(lane, tmp_path) -> None:
    """The old call passed the MLflow model name as --model; trtllm-bench loads its tokenizer from it."""
    done = subprocess.run(["trtllm-bench", "--model", "SmolLM2-135M-Instruct", "prepare-dataset", "--output",
                           str(tmp_path / "d.jsonl"), "token-norm-dist", "--num-requests", "1", "--input-mean", "8",
                           "--input-stdev", "0", "--output-mean", "8", "--output-stdev", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Cannot find a tokenizer" in done.stderr
    done = subprocess.run(["trtllm-bench", "--model", str(tmp_path), "throughput", "--config", "x.yaml"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "does not take '--config'" in done.stderr


def test_the_llm_stand_in_refuses_an_option_the_real_llm_args_forbid(lane) -> None:
    import pydantic
    import tensorrt_llm

    with pytest.raises(pydantic.ValidationError):
        tensorrt_llm.LLM(model="/m", kv_cache_config={"tokens_per_blok": 64})


def test_the_engine_build_config_passes_only_fields_the_real_buildconfig_has() -> None:
    from enginewright.serving.runtimes.tensorrt_llm import check_build_config

    check_build_config({"max_batch_size": 8, "max_num_tokens": 1024})
    with pytest.raises(ContractError, match="BuildConfig field max_tokens is not one"):
        check_build_config({"max_tokens": 8})


def test_every_serve_command_shown_to_people_is_the_one_the_script_runs() -> None:
    """README said `--config`, the card and the rendered script `--extra_llm_api_options`, and the contract has
    `--config` only as an alias of newer lines (a new user's report): every trtllm-serve command in the README,
    docs and the card passes the options file the one way every TensorRT-LLM line the card names accepts."""
    import re

    root = Path(__file__).resolve().parents[1]
    texts = {p.relative_to(root): p.read_text() for p in [root / "README.md", root / "tasks" / "model_card.py",
                                                           root / "enginewright" / "serving" / "serving_config.py",
                                                           *sorted((root / "docs").glob("*.md"))]}
    commands = [(path, c) for path, text in texts.items() for c in re.findall(r"`(trtllm-serve [^`]*)`", text)]
    with_options = [(path, c) for path, c in commands if "llm_api" in c]
    assert len(with_options) >= 3, commands  # README, the card, the script's docstring at least
    assert [(path, c) for path, c in with_options if "--extra_llm_api_options" not in c or "--config" in c] == []
