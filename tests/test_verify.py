"""Verify after deploy, on the embedded registry with a real endpoint: the trtllm-serve stand-in serving the release's
checkpoint on the CPU, started by a test serving host from the rendered trtllm-serve.sh; AIPerf's real load test
against it. A good release ends verified; one whose host serves another checkpoint, or never serves the release,
is rolled back by itself: `current`, the alias, the tags and the history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginewright.config.settings import Settings
from enginewright.errors import InputError, VerificationFailed
from enginewright.ops.prefect_server import free_port
from enginewright.registry.promotion import AliasStore
from enginewright.registry.registry_client import registry_client
from enginewright.serving.golden import (
    Answer,
    Continuation,
    answer_letter,
    choice_prompt,
    compare_answers,
    compare_continuations,
    read_golden,
)
from flows.deploy import deploy_version
from flows.verify import verify_release
from tests.registered_bundle import register_bundle
from tests.serving_host import ServingHost


def write_target(path: Path, port: int, **verify: object) -> Path:
    policy = {"ready_timeout_s": 60, "load_requests": 4, "load_concurrency": 2, "load_max_tokens": 8, **verify}
    path.write_text(f"name: cpu\ngpu: CPU stand-in\ncompute_capability: '9.0'\nhost: 127.0.0.1\nport: {port}\n"
                    f"endpoint: http://127.0.0.1:{port}\nverify: {json.dumps(policy)}\n")
    return path


def test_the_lettered_subset_and_the_comparisons() -> None:
    prompt, gold = choice_prompt("arc_easy", {"question": "Q?", "answerKey": "2",
                                              "choices": {"text": ["x", "y"], "label": ["1", "2"]}})
    assert prompt == "Question: Q?\nA. x\nB. y\nAnswer:" and gold == "B"
    assert choice_prompt("mmlu", {"question": "Q", "choices": ["a", "b", "c", "d"], "answer": 3})[1] == "D"
    assert answer_letter(" C", 4) == "C" and answer_letter(" E.", 4) == "" and answer_letter("\n", 4) == ""
    golden = [Continuation("p", "h", [1], " yes"), Continuation("q", "h2", [2], " no way")]
    replay = compare_continuations(golden, [" yes", " nope"])
    assert (replay.matched, replay.exact_match) == (1, 0.5) and "served ' nope'" in replay.first_mismatch
    assert replay.prefix_share == (1 + 3 / 7) / 2  # " no way" and " nope" share " no"
    build = [Answer(f"d{i}", f"p{i}", "A", "A", "?", 4) for i in range(12)]
    served = [Answer(f"d{i}", f"p{i}", "B", "A", "?", 4) for i in range(12)]
    worse = compare_answers(build, served)
    assert (worse.agreeing, worse.only_build_right, worse.only_served_right) == (0, 12, 0)
    assert worse.mcnemar_p < 0.001
    assert compare_answers(build, build).mcnemar_p == 1.0
    with pytest.raises(ValueError, match="another prompt"):
        compare_answers(build, [Answer(f"d{i}", "other", "A", "A", "?", 4) for i in range(12)])


@pytest.fixture
def checkpoints(tiny_model: Path, smollm2: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The good checkpoint and another one (the real SmolLM2: a random tiny Llama repeats its prompt's last token,
    which another random one does too), named `checkpoint` as a bundle's is."""
    other = tmp_path / "other" / "checkpoint"
    other.parent.mkdir()
    other.symlink_to(smollm2, target_is_directory=True)
    return tiny_model, other


def test_a_good_release_is_verified_and_a_wrong_checkpoint_rolls_back(settings: Settings, tmp_path: Path,
                                                                      checkpoints, shared_data: Path) -> None:
    good, other = checkpoints
    client = registry_client(settings.tracking_uri)
    data = shared_data / "eval"
    v1 = register_bundle(settings, tmp_path / "b", "chat", checkpoint=good, golden_data=data)
    v2 = register_bundle(settings, tmp_path / "b", "chat", checkpoint=good, golden_data=data)
    golden = read_golden(Path(v1.source.removeprefix("file://")))
    assert golden is not None and len(golden.continuations) == 16 and len(golden.answers) == 40
    target = write_target(tmp_path / "cpu.yaml", free_port())
    root = settings.serving_dir / "cpu" / "chat"
    with ServingHost(root, tmp_path / "serving.log", serve_instead={v2.version: other}) as host:
        client.set_registered_model_alias("chat", "production", v1.version)
        outcome = deploy_version("chat", alias="production", target_path=str(target))
        assert outcome.status == "deployed" and "verified: serving after" in outcome.message, outcome.message
        tags = client.get_model_version("chat", v1.version).tags
        assert tags["deploy.cpu.verification"] == "verified"
        assert "golden 16/16 exact, 100 % shared before diverging" in tags["deploy.cpu.verification_detail"]
        assert "subset 40/40 answers agree" in tags["deploy.cpu.verification_detail"]
        assert "output tokens/s at concurrency 2" in tags["deploy.cpu.verification_detail"]
        v1_release = (root / "current").resolve()
        prometheus = v1_release / "prometheus"
        assert f"chat version {v1.version} on cpu" in (prometheus / "alerts.yml").read_text()
        # the release's llm_api.yaml asks for return_perf_metrics, so the endpoint mounts what the rules read
        from enginewright.serving.openai_endpoint import Endpoint
        from enginewright.serving.targets import load_target

        status, exposition = Endpoint(str(load_target(target).endpoint)).get("/prometheus/metrics")
        assert status == 200 and "trtllm_request_success_total" in str(exposition)

        client.set_registered_model_alias("chat", "production", v2.version)
        with pytest.raises(VerificationFailed, match=r"golden replay: the served continuations share [0-9] % of the "
                                                     r"build's before diverging \(needs 50 %") as failed:
            deploy_version("chat", alias="production", target_path=str(target))
        assert f"rolled back to version {v1.version}" in str(failed.value)
        assert (root / "current").resolve() == v1_release
        assert str(client.get_model_version_by_alias("chat", "production").version) == v1.version
        # claimed: the relay or poll that sees the alias move back announces nothing (no second deploy)
        assert AliasStore(settings.watch_db_url).announced("chat", "production") == v1.version
        v2_tags = client.get_model_version("chat", v2.version).tags
        assert v2_tags["deploy.cpu.status"] == "rolled back" and "golden replay" in v2_tags["deploy.cpu.reason"]
        assert v2_tags["deploy.cpu.verification"] == "failed"
        assert client.get_model_version("chat", v1.version).tags["deploy.cpu.status"].startswith("deployed (restored")
        history = json.loads(client.get_registered_model("chat").tags["deploy.cpu.history"])
        assert [(h["version"], h["action"], h["status"]) for h in history] == [
            (v1.version, "promote", "deployed"), (v2.version, "promote", "deployed"),
            (v2.version, "verify", "rolled-back"), (v1.version, "rollback", "deployed")]
        assert host.started[-1] == v1_release.name  # the host serves the restored release again

        # By hand, the restored release verifies again.
        assert verify_release("chat", str(target)).status == "verified"


def test_an_endpoint_that_never_serves_the_release_fails_after_the_bounded_wait(settings: Settings, tmp_path: Path,
                                                                                checkpoints, shared_data) -> None:
    good, other = checkpoints
    renamed = tmp_path / "elsewhere" / "weights"  # served as 'weights', not as the release's 'solo-v1'
    renamed.parent.mkdir()
    renamed.symlink_to(other, target_is_directory=True)
    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "solo", checkpoint=good, golden_data=shared_data / "eval")
    target = write_target(tmp_path / "cpu.yaml", free_port(), ready_timeout_s=15, load_requests=0)
    root = settings.serving_dir / "cpu" / "solo"
    with ServingHost(root, tmp_path / "serving.log", serve_as={v1.version: renamed}):
        client.set_registered_model_alias("solo", "production", v1.version)
        with pytest.raises(VerificationFailed, match=r"did not serve version .* within 15 s: it serves 'weights', not "
                                                     r"'solo-v1' \(/v1/models\) \[not serving after 1[5-9]\.[0-9] s\]; rolled back: no earlier release"):
            deploy_version("solo", alias="production", target_path=str(target))
    assert not (root / "current").exists()  # nothing half-switched: no release is current
    with pytest.raises(Exception, match="not found|RESOURCE_DOES_NOT_EXIST|alias"):
        client.get_model_version_by_alias("solo", "production")
    assert AliasStore(settings.watch_db_url).announced("solo", "production") is None  # setting it again deploys


def test_verify_needs_an_endpoint_and_a_deployed_release(settings: Settings, tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\ngpu: g\ncompute_capability: '9.0'\n")
    with pytest.raises(InputError, match="target 'bare' names no endpoint: add `endpoint: http://host:port`"):
        verify_release("m", str(bare))
    with pytest.raises(InputError, match="nothing of m is deployed on cpu"):
        verify_release("m", str(write_target(tmp_path / "cpu.yaml", free_port())))


def test_the_standin_serves_a_modelopt_export_and_refuses_what_trtllm_serve_refuses(int8_sq_state, tiny_model: Path,
                                                                                   tmp_path: Path) -> None:
    """A real INT8-SmoothQuant export (weights int8 + scales) is served with its weights dequantized; the golden
    continuations of the evaluated (simulated, activation-quantized) candidate are compared — the share is printed,
    not asserted: the stand-in does not quantize activations. The contract: an unknown option refuses to start, an
    unknown request key is a 400."""
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from enginewright.quant.models import load_tokenizer
    from enginewright.serving.golden import GOLDEN_PROMPTS, compare_continuations
    from enginewright.serving.openai_endpoint import Endpoint, wait_until_serving
    from tasks.runtimes.simulated import load_candidate
    from tasks.smoke import greedy_continuations
    from tests.serving_host import STANDINS_BIN

    state, exported = int8_sq_state
    serve = [sys.executable, str(STANDINS_BIN / "trtllm-serve")]
    refused = subprocess.run([*serve, str(exported), "--gpus", "1"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "trtllm-serve does not take '--gpus'" in refused.stderr
    port = free_port()
    server = subprocess.Popen([*serve, str(exported), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{port}")
        ready = wait_until_serving(endpoint, exported.name, "1.3.0rc20", 120)
        assert ready.ready, ready.detail
        candidate = load_candidate(tiny_model, state, "bfloat16", fold=True, exported=exported)
        expected = [Continuation(p, "", ids, text) for p, (ids, text) in
                    zip(GOLDEN_PROMPTS, greedy_continuations(candidate, load_tokenizer(tiny_model), GOLDEN_PROMPTS, 12),
                        strict=True)]
        started = time.perf_counter()
        replay = compare_continuations(expected, [endpoint.complete(exported.name, p, 12) for p in GOLDEN_PROMPTS])
        print(f"\nINT8-SQ export served (weights dequantized, inputs quantized by its scales): {replay.matched}/{replay.total} golden continuations equal the "
              f"simulated candidate's ({time.perf_counter() - started:.1f} s)")
        request = urllib.request.Request(f"{endpoint.base_url}/v1/completions", method="POST",
                                         data=b'{"model": "checkpoint", "prompt": "x", "best_of_n": 2}')
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(request, timeout=30)
        assert bad.value.code == 400 and "best_of_n: Extra inputs are not permitted" in bad.value.read().decode()
        # started without an options file, as trtllm-serve without return_perf_metrics: no Prometheus route
        assert endpoint.get("/prometheus/metrics")[0] == 404
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_check_that_cannot_finish_fails_the_release(monkeypatch, tmp_path: Path) -> None:
    """A verifier that breaks (AIPerf missing, lm-eval raising) must not leave a release as if verified."""
    import tasks.verify as verify
    from enginewright.serving.golden import Golden
    from enginewright.serving.openai_endpoint import Readiness
    from enginewright.serving.targets import load_target

    def broken(*args, **kwargs):
        raise RuntimeError("aiperf: command not found")

    monkeypatch.setattr(verify, "wait_until_serving", lambda *a, **k: Readiness(True, 0.1, "serves 'checkpoint'"))
    monkeypatch.setattr(verify, "replay_golden", broken)
    target = load_target(write_target(tmp_path / "t.yaml", free_port()))
    golden = Golden("p", 8, [Continuation("p", "h", [1], " x")], None, [])
    deployment = {"model": "m", "version": "3", "runtime": "tensorrt_llm", "served_path": str(tmp_path / "checkpoint")}
    report = verify.verify_release_task.fn(deployment, golden, {}, target, tmp_path)
    assert not report.passed
    assert report.reasons == ["verification could not finish: RuntimeError: aiperf: command not found"]


def test_the_load_test_is_judged_on_its_own_latency_never_on_a_saturation_benchmark(tmp_path: Path) -> None:
    """trtllm-bench's tokens/s is measured at unbounded concurrency: a concurrency-4 test can never reach it (vLLM on
    an H100: 1,155 output tok/s at 4, 9,431 at 256), so comparing them rolled back every GPU release."""
    from enginewright.serving.targets import load_target
    from tasks.verify import VerificationReport, judge

    target = load_target(write_target(tmp_path / "t.yaml", free_port(), max_ttft_p99_s=0.5))
    manifest = {"engine": {"bench": {"performance.system_output_throughput_tok_s": 9431.0}}}
    load = {"output_tokens_per_s": 1155.0, "concurrency": 4, "ttft_p99_s": 0.04, "errors": 0, "requests": 32}
    calm = judge(VerificationReport("m", "1", "t", "http://x", load=load), target, manifest)
    assert calm.passed and any("unbounded concurrency" in note for note in calm.notes)
    slow = judge(VerificationReport("m", "1", "t", "http://x", load={**load, "ttft_p99_s": 0.9}), target, manifest)
    assert slow.reasons == ["load test: p99 time to first token 0.900 s at concurrency 4, above 0.5 s"]
