"""The deploy flow on the embedded registry (MLflow on SQLite, bundles in a directory): fit checks, rendered
serving configs, atomic switch, refusals that change nothing, rollout tags, history and rollback."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from enginewright.config.settings import Settings
from enginewright.errors import DeployRefused, InputError
from enginewright.registry.registry_client import registry_client
from enginewright.serving.fit_check import fit_problems
from enginewright.serving.runtimes.tensorrt_llm import serving_options
from enginewright.serving.serving_config import render_release
from enginewright.serving.targets import DeployTarget, load_target
from flows.deploy import deploy_version, rollback
from tasks.deploy import previous_deployed_version
from tests.registered_bundle import register_bundle

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "specs" / "targets" / "h100.yaml"
A100 = ROOT / "specs" / "targets" / "a100.yaml"


def target(**fields) -> DeployTarget:
    return DeployTarget(**{"name": "t", "gpu": "GPU", "compute_capability": "9.0", **fields})


@pytest.mark.parametrize("fmt, capability, verdict, runtime, fits", [
    ("fp8", "9.0", "pass", {}, True),
    ("fp8", "8.9", "pass", {}, True),
    ("fp8", "8.0", "pass", {}, False),  # FP8 needs Ada/Hopper
    ("int4_awq", "8.0", "pass", {}, True),
    ("int8_sq", "7.5", "pass", {}, True),
    ("nvfp4", "9.0", "pass", {}, True),  # Hopper serves NVFP4 from TensorRT-LLM 1.3.0rc20 (the pinned image) ...
    ("nvfp4", "9.0", "pass", {"runtime_version": "1.2.0"}, False),  # ... and not before it
    ("nvfp4", "10.0", "pass", {"runtime_version": "1.2.0"}, True),
    ("fp8", "9.0", "fail", {}, False),
    ("fp8", "9.0", "inconclusive", {}, False),
    ("fp8", "9.0", "pass", {"runtime": "vllm"}, True),
    ("fp8_pcpt", "8.9", "pass", {"runtime": "vllm"}, True),
    ("nvfp4", "8.0", "pass", {"runtime": "vllm"}, True),  # vLLM's Marlin NVFP4 kernels, compute capability 7.5+
    ("int4_awq", "9.0", "pass", {"runtime": "vllm"}, False),  # vLLM's ModelOpt loader has no INT4-AWQ
    ("int8_sq", "9.0", "pass", {"runtime": "vllm"}, False),
    ("w4a8_awq", "9.0", "pass", {"runtime": "vllm"}, False),
])
def test_fit_check_by_format_runtime_capability_and_gate(fmt, capability, verdict, runtime, fits) -> None:
    problems = fit_problems({"quantization": {"format": fmt}, "engine": {"status": "skipped"}},  # type: ignore[typeddict-item]
                            {"gate.verdict": verdict}, target(compute_capability=capability, **runtime))
    assert (problems == []) == fits, problems


def test_an_instance_needs_tensor_times_pipeline_parallel_gpus_on_the_target(tmp_path: Path) -> None:
    fp8 = {"quantization": {"format": "fp8"}, "engine": {"status": "skipped"}}
    passed = {"gate.verdict": "pass"}
    assert fit_problems(fp8, passed, target(), {"tensor_parallel_size": 1}) == []  # type: ignore[arg-type]
    (problem,) = fit_problems(fp8, passed, target(), {"tensor_parallel_size": 2,  # type: ignore[arg-type]
                                                      "pipeline_parallel_size": 2})
    assert problem == ("one instance needs 4 GPUs (tensor_parallel_size 2 × pipeline_parallel_size 2); target 't' has "
                       "gpu_count 1")
    assert fit_problems(fp8, passed, target(gpu_count=8), {"tensor_parallel_size": 4}) == []  # type: ignore[arg-type]
    # the target's own tensor_parallel_size replaces the bundle's, as the release serves it (serving_options)
    (tmp_path / "llm_api.yaml").write_text("backend: pytorch\ntensor_parallel_size: 8\n")
    two = target(gpu_count=2, tensor_parallel_size=2)
    assert fit_problems(fp8, passed, two, serving_options(tmp_path, two)) == []  # type: ignore[arg-type]


def test_the_serving_table_names_why_a_format_is_refused() -> None:
    problems = fit_problems({"quantization": {"format": "int4_awq"}, "engine": {"status": "skipped"}},  # type: ignore[typeddict-item]
                            {"gate.verdict": "pass"}, target(runtime="vllm"))
    assert problems == ["target 't' (GPU): vLLM cannot load int4_awq checkpoints (served by TensorRT-LLM)"]
    (problem,) = fit_problems({"quantization": {"format": "nvfp4"}, "engine": {"status": "skipped"}},  # type: ignore[typeddict-item]
                              {"gate.verdict": "pass"}, target(runtime_version="1.2.0"))
    assert "needs a GPU of compute capability 10.0+" in problem and "TensorRT-LLM ≥ 1.3.0rc20 serves it on 9.0" in problem


def test_an_autoquantize_mix_is_checked_layer_group_by_layer_group() -> None:
    """A MIXED_PRECISION bundle fits where its runtime loads mixes and serves every group's format on the GPU; a
    refusal names the layer and its format."""
    def mix(*formats: str) -> dict:
        groups = {f"model.layers.{i}.mlp.gate_proj": fmt for i, fmt in enumerate(formats)}
        return {"quantization": {"format": "auto-5.4", "mix": {"groups": groups}}, "engine": {"status": "skipped"}}

    passed = {"gate.verdict": "pass"}
    assert fit_problems(mix("fp8", "int4_awq", "none"), passed, target()) == []  # type: ignore[arg-type]
    # vLLM 0.26.0 loads MIXED_PRECISION (modelopt_mixed), but not a group in a format its loader lacks
    assert fit_problems(mix("fp8", "none"), passed, target(runtime="vllm")) == []  # type: ignore[arg-type]
    assert fit_problems(mix("fp8", "int4_awq"), passed, target(runtime="vllm")) == [  # type: ignore[arg-type]
        "target 't' (GPU): layer model.layers.1.mlp.gate_proj is int4_awq: vLLM cannot load int4_awq checkpoints "
        "(served by TensorRT-LLM)"]
    (problem,) = fit_problems(mix("int4_awq", "fp8"), passed, target(compute_capability="8.0"))  # type: ignore[arg-type]
    assert problem.startswith("target 't' (GPU): layer model.layers.1.mlp.gate_proj is fp8: fp8 on TensorRT-LLM")
    assert "needs a GPU of compute capability 8.9+" in problem
    (problem,) = fit_problems(mix("fp8"), passed, target(runtime_version="1.2.0"))  # type: ignore[arg-type]
    assert problem == "target 't' (GPU): a MIXED_PRECISION checkpoint needs TensorRT-LLM ≥ 1.3.0rc20; the target runs 1.2.0"


@pytest.mark.parametrize("fields, message", [
    ({"runtime": "sglang"}, "Input should be 'tensorrt_llm' or 'vllm'"),
    ({"runtime_version": "0.9"}, "TensorRT-LLM 0.9 is older than any version the serving table knows (1.0+)"),
    ({"runtime": "vllm", "runtime_version": "latest"}, "'latest' is not a version"),
    ({"runtime": "vllm", "serve_legacy_engine": True}, "serve_legacy_engine needs runtime tensorrt_llm"),
])
def test_a_target_with_a_runtime_or_version_the_table_does_not_know_is_refused(fields, message) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        target(**fields)


def test_a_legacy_engine_fits_only_its_own_gpu_architecture_and_tensorrt() -> None:
    built = {"quantization": {"format": "fp8"}, "engine": {"status": "built", "compute_capability": "9.0",
                                                           "tensorrt": "10.13.3"}}
    tags = {"gate.verdict": "pass"}
    same = target(serve_legacy_engine=True, tensorrt_version="10.13.3")
    assert fit_problems(built, tags, same) == []  # type: ignore[arg-type]
    (problem,) = fit_problems(built, tags, same.model_copy(update={"compute_capability": "10.0"}))  # type: ignore[arg-type]
    assert "built for compute capability 9.0 with TensorRT 10.13.3" in problem and "has 10.0" in problem
    assert fit_problems(built, tags, same.model_copy(update={"tensorrt_version": "10.14.1"}))  # type: ignore[arg-type]
    skipped = {"quantization": {"format": "fp8"}, "engine": {"status": "skipped"}}
    assert "has none" in fit_problems(skipped, tags, same)[0]  # type: ignore[arg-type]
    assert fit_problems(built, tags, target()) == []  # type: ignore[arg-type]  # checkpoint served: engine ignored


def test_target_files_are_validated_with_the_bad_value_named(tmp_path: Path) -> None:
    assert load_target(H100).capability == (9, 0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngpu: g\ncompute_capability: nine\n")
    with pytest.raises(InputError, match=r"compute_capability: Value error, 'nine' is not 'major.minor'"):
        load_target(bad)
    bad.write_text("name: x\ngpu: g\ncompute_capability: '9.0'\nprot: 80\n")
    with pytest.raises(InputError, match=r"prot: Extra inputs are not permitted"):
        load_target(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_target(tmp_path / "missing.yaml")


def test_the_rendered_release_serves_the_bundle_with_trtllm_serve_and_triton(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "checkpoint").mkdir(parents=True)
    (bundle / "llm_api.yaml").write_text("backend: pytorch\nmax_batch_size: 16\ntensor_parallel_size: 1\n")
    template = tmp_path / "llmapi" / "tensorrt_llm"
    (template / "1").mkdir(parents=True)
    for name in ("config.pbtxt", "1/model.py", "1/helpers.py"):  # stand-ins for TensorRT-LLM's own files
        (template / name).write_text(f"# {name} of the TensorRT-LLM release\n")
    release = tmp_path / "releases" / "v1"
    deployment = render_release(bundle, {"bundle_id": "b" * 64, "quantization": {"format": "fp8"}},  # type: ignore[arg-type]
                                target(port=9001, gpu_count=2, tensor_parallel_size=2, triton_llmapi_template=template),
                                "m", "1", release)
    options = yaml.safe_load((release / "llm_api.yaml").read_text())
    assert options["tensor_parallel_size"] == 2 and options["max_batch_size"] == 16
    assert options["trust_remote_code"] is False
    # monitoring is rendered with every release, so trtllm-serve must mount /prometheus/metrics and keep the
    # iteration stats behind the queue and KV-cache gauges
    assert options["return_perf_metrics"] is True and options["enable_iter_perf_stats"] is True
    script = (release / "trtllm-serve.sh").read_text()
    # trtllm-serve reports the model directory's name on /v1/models: a link named for the release tells them apart
    assert (release / "m-v1").resolve() == (bundle / "checkpoint").resolve() and deployment["served_as"] == str(release / "m-v1")
    # Shippable (a new user's report: it only worked on the machine that rendered it): the script runs from its own
    # folder with relative paths, the link is relative, and no path of this machine is in the script.
    assert script.splitlines()[2] == 'cd "$(dirname "$0")" || exit 1'
    assert "exec trtllm-serve m-v1 --host 0.0.0.0 --port 9001 --extra_llm_api_options llm_api.yaml" in script
    assert str(tmp_path) not in script and os.readlink(release / "m-v1") == "../../bundle/checkpoint"
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "releases", moved / "releases", symlinks=True)
    shutil.copytree(bundle, moved / "bundle")
    assert (moved / "releases" / "v1" / "m-v1").resolve() == (moved / "bundle" / "checkpoint").resolve()
    model_yaml = yaml.safe_load((release / "triton" / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert model_yaml["model"] == str(bundle / "checkpoint") and model_yaml["backend"] == "pytorch"
    assert model_yaml["triton_config"] == {"max_batch_size": 0, "decoupled": False}
    assert (release / "triton" / "tensorrt_llm" / "1" / "model.py").read_text().startswith("# 1/model.py")
    assert json.loads((release / "deployment.json").read_text()) == deployment
    assert not release.with_name("v1.partial").exists()


@pytest.mark.parametrize("fmt, kv, quantization, kv_dtype", [
    ("fp8", "FP8", "modelopt", "fp8"), ("fp8_pcpt", None, "modelopt", "auto"), ("nvfp4", None, "modelopt_fp4", "auto"),
])
def test_a_vllm_target_renders_vllm_serve_with_modelopts_loader_and_the_kv_cache_dtype(tmp_path, fmt, kv,
                                                                                      quantization, kv_dtype) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "checkpoint").mkdir(parents=True)
    release = tmp_path / "releases" / "v1"
    manifest = {"bundle_id": "b" * 64, "quantization": {"format": fmt, "kv_cache_quant_algo": kv}}
    deployment = render_release(bundle, manifest, target(runtime="vllm", port=9002, gpu_count=2, tensor_parallel_size=2),  # type: ignore[arg-type]
                                "m", "1", release)
    assert deployment["runtime"] == "vllm" and "trtllm_serve" not in deployment
    # The release's own id on /v1/models (a vLLM release could not be told from the one still serving when every
    # release was served as plain "m"), and paths relative to the release folder, which the script cds into.
    assert deployment["vllm_serve"] == ["vllm", "serve", "m-v1", "--host", "0.0.0.0", "--port",
                                        "9002", "--quantization", quantization, "--kv-cache-dtype", kv_dtype,
                                        "--served-model-name", "m-v1", "--tensor-parallel-size", "2"]
    assert sorted(p.name for p in release.iterdir()) == ["deployment.json", "m-v1", "prometheus", "vllm-serve.sh"]
    assert (release / "m-v1").resolve() == (bundle / "checkpoint").resolve()
    script = (release / "vllm-serve.sh").read_text()
    assert 'cd "$(dirname "$0")"' in script and str(tmp_path) not in script
    from tasks.verify import expected_model_id
    assert expected_model_id(deployment) == "m-v1"


def test_the_vllm_contract_refuses_what_vllm_serve_does_not_take() -> None:
    from enginewright.serving.runtimes.vllm import VllmContractError, check_vllm_serve_argv

    with pytest.raises(VllmContractError, match="does not take '--extra_llm_api_options'"):
        check_vllm_serve_argv(["vllm", "serve", "m", "--extra_llm_api_options", "x.yaml"])
    with pytest.raises(VllmContractError, match="--kv-cache-dtype 'fp4'"):
        check_vllm_serve_argv(["vllm", "serve", "m", "--kv-cache-dtype", "fp4"])


def current_version(settings: Settings, target_name: str, model: str) -> str | None:
    link = settings.serving_dir / target_name / model / "current"
    return json.loads((link / "deployment.json").read_text())["version"] if link.is_symlink() else None


def test_deploy_refuse_supersede_and_roll_back(settings: Settings, tmp_path: Path) -> None:
    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "chat", fmt="int4_awq")
    client.set_registered_model_alias("chat", "production", v1.version)
    first = deploy_version("chat", alias="production", target_path=str(A100))
    assert first.status == "deployed" and current_version(settings, "a100", "chat") == v1.version
    assert deploy_version("chat", v1.version, target_path=str(A100)).status == "already-deployed"
    before = (settings.serving_dir / "a100" / "chat" / "current").resolve()

    v2 = register_bundle(settings, tmp_path / "b", "chat", fmt="fp8")  # FP8 does not run on an A100
    with pytest.raises(DeployRefused, match=r"'a100'.*fp8 on TensorRT-LLM 1.3.0rc20 needs a GPU of compute capability 8.9\+; the target has 8.0"):
        deploy_version("chat", v2.version, target_path=str(A100))
    assert (settings.serving_dir / "a100" / "chat" / "current").resolve() == before  # untouched
    tags = client.get_model_version("chat", v2.version).tags
    assert tags["deploy.a100.status"] == "refused" and "fp8 on TensorRT-LLM 1.3.0rc20 needs" in tags["deploy.a100.reason"]

    v3 = register_bundle(settings, tmp_path / "b", "chat", fmt="int8_sq", verdict="fail")
    with pytest.raises(DeployRefused, match="gate verdict is 'fail'"):
        deploy_version("chat", v3.version, target_path=str(A100))

    v4 = register_bundle(settings, tmp_path / "b", "chat", fmt="int8_wo")
    client.set_registered_model_alias("chat", "production", v4.version)
    assert deploy_version("chat", alias="production", target_path=str(A100)).status == "deployed"
    assert current_version(settings, "a100", "chat") == v4.version
    assert client.get_model_version("chat", v1.version).tags["deploy.a100.status"] == f"superseded by version {v4.version}"
    v4_tags = client.get_model_version("chat", v4.version).tags
    assert v4_tags["deploy.a100.status"] == "deployed" and Path(v4_tags["deploy.a100.config"]).is_dir()

    # An event for a version the alias no longer points at deploys nothing.
    assert deploy_version("chat", v1.version, alias="production", target_path=str(A100)).status == "skipped"

    outcome = rollback("chat", settings.model_copy(update={"deploy_target": A100}))
    assert outcome.status == "deployed" and outcome.version == v1.version
    assert str(client.get_model_version_by_alias("chat", "production").version) == v1.version
    assert current_version(settings, "a100", "chat") == v1.version
    history = json.loads(client.get_registered_model("chat").tags["deploy.a100.history"])
    assert [(h["version"], h["action"], h["status"]) for h in history] == [
        (v1.version, "promote", "deployed"), (v2.version, "promote", "refused"),
        (v3.version, "promote", "refused"), (v4.version, "promote", "deployed"),
        (v1.version, "rollback", "deployed")]


def test_a_bundle_that_fails_verification_is_refused_and_nothing_switches(settings: Settings, tmp_path: Path) -> None:
    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "m", fmt="fp8")
    stored = Path(v1.source.removeprefix("file://"))
    (stored / "checkpoint" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(DeployRefused, match="bundle verification failed: bundle file checkpoint/model.safetensors"):
        deploy_version("m", v1.version, target_path=str(H100))
    assert current_version(settings, "h100", "m") is None
    assert not (settings.serving_dir / "h100" / "m" / "bundles" / f"v{v1.version}").exists()
    assert client.get_model_version("m", v1.version).tags["deploy.h100.status"] == "refused"


def test_rollback_needs_an_earlier_deployed_version(settings: Settings, tmp_path: Path) -> None:
    assert previous_deployed_version([{"version": "1", "status": "deployed"}, {"version": "2", "status": "refused"},
                                      {"version": "3", "status": "deployed"}], "3") == "1"
    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "solo", fmt="fp8")
    client.set_registered_model_alias("solo", "production", v1.version)
    deploy_version("solo", alias="production", target_path=str(H100))
    with pytest.raises(InputError, match="no earlier deployed version on h100"):
        rollback("solo", settings)


def test_a_refused_promotion_moves_the_alias_back_to_the_version_that_serves(settings: Settings, tmp_path: Path) -> None:
    """Before: `production` stayed on the refused version while the old one served, so the registry said one thing
    and the serving host did another. The move back is claimed, so the relay and the poll deploy nothing for it."""
    from enginewright.registry.promotion import AliasStore

    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "chat", fmt="int4_awq")
    client.set_registered_model_alias("chat", "production", v1.version)
    assert deploy_version("chat", alias="production", target_path=str(A100)).status == "deployed"
    v2 = register_bundle(settings, tmp_path / "b", "chat", fmt="fp8")  # FP8 does not run on an A100
    client.set_registered_model_alias("chat", "production", v2.version)
    with pytest.raises(DeployRefused, match="fp8 on TensorRT-LLM 1.3.0rc20 needs a GPU of compute capability 8.9"):
        deploy_version("chat", v2.version, alias="production", target_path=str(A100))
    assert str(client.get_model_version_by_alias("chat", "production").version) == v1.version
    assert current_version(settings, "a100", "chat") == v1.version
    assert AliasStore(settings.watch_db_url).announced("chat", "production") == v1.version  # claimed: no redeploy
    assert client.get_model_version("chat", v2.version).tags["deploy.a100.status"] == "refused"


def test_a_vllm_release_of_an_autoquantize_mix_names_vllms_mixed_loader(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "checkpoint").mkdir(parents=True)
    manifest = {"bundle_id": "b" * 64, "quantization": {"format": "auto-5.4", "mix": {"groups": {"a": "fp8"}}}}
    deployment = render_release(bundle, manifest, target(runtime="vllm"), "m", "2", tmp_path / "v2")  # type: ignore[arg-type]
    argv = deployment["vllm_serve"]
    assert argv[argv.index("--quantization") + 1] == "modelopt_mixed"


def test_nvfp4_below_blackwell_is_served_weight_only_so_its_golden_records_do_not_judge_it() -> None:
    from enginewright.serving.serving_runtimes import simulation_mismatch

    assert "served weight-only" in str(simulation_mismatch("nvfp4", (9, 0)))
    assert simulation_mismatch("nvfp4", (10, 0)) is None
    assert simulation_mismatch("fp8", (9, 0)) is None and simulation_mismatch(None, (9, 0)) is None


def test_every_serving_runtime_is_one_module_behind_the_interface() -> None:
    """A runtime is one module: the registry, the targets' choices and each module's own name agree, and every row of
    a runtime names a format the formats table knows."""
    import typing

    from enginewright.config.formats import FORMATS
    from enginewright.serving.runtimes import RUNTIMES, RuntimeName
    from enginewright.serving.runtimes.base import ServingRuntime

    assert set(typing.get_args(RuntimeName)) == set(RUNTIMES)
    for name, runtime in RUNTIMES.items():
        assert isinstance(runtime, ServingRuntime) and runtime.name == name
        assert runtime.rows and {row.format for row in runtime.rows} <= set(FORMATS), name
        assert runtime.script.endswith(".sh") and runtime.metrics.metrics_path.startswith("/")


def test_a_vllm_target_is_sized_by_its_own_tensor_parallel_size_not_tensorrt_llms_options(tmp_path: Path) -> None:
    """The fit check asked TensorRT-LLM's llm_api.yaml how many GPUs a vLLM release takes; vLLM is given only the
    target's --tensor-parallel-size."""
    from enginewright.serving.runtimes import RUNTIMES

    (tmp_path / "llm_api.yaml").write_text("tensor_parallel_size: 8\n")
    one = target(runtime="vllm")
    assert RUNTIMES["vllm"].parallelism(tmp_path, one) == {"tensor_parallel_size": 1}
    assert RUNTIMES["tensorrt_llm"].parallelism(tmp_path, one)["tensor_parallel_size"] == 8


def test_versions_lists_verdict_format_aliases_and_deploy_status(settings: Settings, tmp_path: Path, capsys) -> None:
    from enginewright.cli.main import main

    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "chat", fmt="int4_awq")
    v2 = register_bundle(settings, tmp_path / "b", "chat", fmt="int8_sq", verdict="fail")
    client.set_registered_model_alias("chat", "production", v1.version)
    client.set_model_version_tag("chat", v1.version, "deploy.a100.status", "deployed")
    assert main(["versions", "chat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "chat: 2 version(s)"
    newest, oldest = lines[2].split(), lines[3].split()
    assert newest[:3] == [v2.version, "fail", "int8_sq"] and "@production" not in newest
    assert oldest[:3] == [v1.version, "pass", "int4_awq"] and "@production" in oldest and "a100: deployed" in lines[3]
    assert main(["versions", "nope"]) == 2
    assert "no registered model 'nope'; registered: chat" in capsys.readouterr().err
