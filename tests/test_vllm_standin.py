"""The `vllm serve` stand-in (tests/standins/bin/vllm) against the real server's recorded answers, then a vLLM release's
whole serving life on the CPU through it: the release's own `vllm-serve.sh` started by a serving host, deploy,
verify (readiness by the versioned id, golden replay, subset, AIPerf load test, the live /metrics), and — where the
host serves other weights under the release's name — the rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from enginewright.config.settings import Settings
from enginewright.errors import VerificationFailed
from enginewright.registry.registry_client import registry_client
from enginewright.serving.openai_endpoint import Endpoint, wait_until_serving
from flows.deploy import deploy_version
from tests.registered_bundle import register_bundle
from tests.serving_host import STANDINS_BIN, ServingHost, shuffled_weights
from tests.test_verify import free_port

RECORDING = json.loads((Path(__file__).parent / "fixtures" / "vllm-0.26.0" / "responses.json").read_text())
RECORDED_ID = RECORDING["model_id"]


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    tmp_path = tmp_path_factory.mktemp("vllm-standin")
    log = (tmp_path / "vllm.log").open("w")
    process = subprocess.Popen([sys.executable, str(STANDINS_BIN / "vllm"), "serve", str(tiny_model), "--host", "127.0.0.1", "--port",
                                str(port), "--served-model-name", RECORDED_ID], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    endpoint = Endpoint(f"http://127.0.0.1:{port}")
    try:
        assert wait_until_serving(endpoint, RECORDED_ID, "0.26.0", 120).ready, (tmp_path / "vllm.log").read_text()
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def test_like_vllm_the_standin_refuses_modelopt_on_a_checkpoint_without_its_quantization_config(
        tiny_model: Path) -> None:
    """Seen on the H100: `vllm serve --quantization modelopt` on a plain checkpoint never starts (the FP8 export it
    serves is the wrong-host test's below)."""
    refused = subprocess.run([sys.executable, str(STANDINS_BIN / "vllm"), "serve", str(tiny_model), "--port", "1",
                              "--quantization", "modelopt"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Cannot find the config file for modelopt" in refused.stderr, refused.stderr


def http(endpoint: Endpoint, method: str, path: str, request: Any) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    data = None if request is None else (request.encode() if isinstance(request, str) else json.dumps(request).encode())
    ask = urllib.request.Request(endpoint.base_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(ask, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read().decode()


def shape(body: str) -> Any:
    """The keys of an answer, nested (values left out: another model answers other words, and a field is null or not
    by what it answered): what must match the real server's."""
    def keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: keys(v) for k, v in value.items() if k not in ("message",)}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return [keys(value[0])]
        return "value"

    if body.startswith("data:"):
        chunks = [c.removeprefix("data: ") for c in body.split("\n\n") if c.strip()]
        return [keys(json.loads(c)) if c != "[DONE]" else c for c in (chunks[0], chunks[-2], chunks[-1])]
    try:
        return keys(json.loads(body))
    except json.JSONDecodeError:
        return body


@pytest.mark.parametrize("index", [i for i, e in enumerate(RECORDING["exchanges"]) if e["path"] != "/metrics"
                                   and not (isinstance(e["request"], dict) and e["request"].get("logprobs"))])
def test_the_standin_answers_as_the_recorded_real_server_did(served: Endpoint, index: int) -> None:
    """Same status, same keys (nested), same error types, same stream framing — for every recorded exchange but
    logprobs (the verify step never asks; the stand-in does not compute them)."""
    recorded = RECORDING["exchanges"][index]
    status, body = http(served, recorded["method"], recorded["path"], recorded["request"])
    assert status == recorded["status"], body
    mine, real = shape(body), shape(recorded["body"])
    if recorded["path"] == "/v1/models":  # values differ, keys must not
        assert mine == real
    elif status >= 400 and isinstance(real, dict) and "error" in real:
        assert mine == real and json.loads(body)["error"]["type"] == json.loads(recorded["body"])["error"]["type"]
    else:
        assert mine == real, (mine, real)


def test_the_standins_metrics_are_the_real_servers_names_types_and_labels(served: Endpoint) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from enginewright.serving.runtimes import RUNTIMES

    http(served, "POST", "/v1/completions", {"model": RECORDED_ID, "prompt": "Hello", "max_tokens": 3, "temperature": 0})
    real_text = next(e["body"] for e in RECORDING["exchanges"] if e["path"] == "/metrics")
    _, mine_text = http(served, "GET", "/metrics", None)

    def families(text: str) -> dict[str, tuple[str, set[str]]]:
        return {f.name: (f.type, {k for s in f.samples for k in s.labels if k != "le"})
                for f in text_string_to_metric_families(text) if f.name.startswith("vllm:")}

    real, mine = families(real_text), families(mine_text)
    names = RUNTIMES["vllm"].metrics
    for name in (names.success, names.e2e_latency, names.ttft, names.time_per_output_token, names.queue_time,
                 names.waiting, names.generation_tokens, names.kv_cache_usage):
        family = name.removesuffix("_total")
        assert family in real, f"{family}: not a series of the real server"
        assert mine.get(family) == real[family], (family, mine.get(family), real[family])


def vllm_target(path: Path, port: int, **verify: object) -> Path:
    policy = {"ready_timeout_s": 120, "load_requests": 4, "load_concurrency": 2, "load_max_tokens": 8, **verify}
    path.write_text(f"name: cpu-vllm\ngpu: CPU stand-in\ncompute_capability: '9.0'\nruntime: vllm\n"
                    f"runtime_version: '0.26.0'\nhost: 127.0.0.1\nport: {port}\nendpoint: http://127.0.0.1:{port}\n"
                    f"verify: {json.dumps(policy)}\n")
    return path


def test_a_vllm_release_is_served_by_its_own_script_verified_and_a_wrong_host_rolls_back(
        settings: Settings, tmp_path: Path, tiny_fp8_export: Path, shared_data: Path) -> None:
    client = registry_client(settings.tracking_uri)
    data = shared_data / "eval"
    v1 = register_bundle(settings, tmp_path / "b", "chat", checkpoint=tiny_fp8_export, golden_data=data)
    v2 = register_bundle(settings, tmp_path / "b", "chat", checkpoint=tiny_fp8_export, golden_data=data)
    # the wrong weights under v2's name, as on the H100 (benchmarks/vllm_release.py): vLLM refuses a modelopt
    # checkpoint without its quantization config, so the fault keeps it and shuffles the weights
    other = shuffled_weights(tiny_fp8_export, tmp_path / "other" / "checkpoint")
    port = free_port()
    target = vllm_target(tmp_path / "cpu-vllm.yaml", port)
    root = settings.serving_dir / "cpu-vllm" / "chat"
    with ServingHost(root, tmp_path / "serving.log", serve_instead={v2.version: other}) as host:
        client.set_registered_model_alias("chat", "production", v1.version)
        outcome = deploy_version("chat", alias="production", target_path=str(target))
        assert outcome.status == "deployed" and "verified: serving after" in outcome.message, outcome.message
        v1_release = (root / "current").resolve()
        assert (v1_release / "vllm-serve.sh").is_file() and not (v1_release / "trtllm-serve.sh").exists()
        detail = client.get_model_version("chat", v1.version).tags["deploy.cpu-vllm.verification_detail"]
        assert "golden 16/16 exact" in detail and "subset 40/40 answers agree" in detail, detail
        status, exposition = Endpoint(f"http://127.0.0.1:{port}").get("/metrics")
        assert status == 200 and f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="chat-v{v1.version}"}}' in str(exposition)

        client.set_registered_model_alias("chat", "production", v2.version)
        with pytest.raises(VerificationFailed, match="golden replay") as failed:
            deploy_version("chat", alias="production", target_path=str(target))
        assert f"rolled back to version {v1.version}" in str(failed.value)
        assert (root / "current").resolve() == v1_release
        assert client.get_model_version("chat", v2.version).tags["deploy.cpu-vllm.status"] == "rolled back"
        deadline = time.monotonic() + 120  # the host serves the restored release again, under its own id
        while host.started[-1] != v1_release.name and time.monotonic() < deadline:
            time.sleep(0.5)
        assert wait_until_serving(Endpoint(f"http://127.0.0.1:{port}"), f"chat-v{v1.version}", "0.26.0", 120).ready
