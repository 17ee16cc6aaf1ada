"""What a real `vllm serve` answered, replayed: the recordings in tests/fixtures/vllm-0.26.0/ were made on the project's
GPU machine (NVIDIA H100 80GB HBM3, driver 580.159.04, vLLM 0.26.0, torch 2.11.0+cu130) by
`benchmarks/vllm_lane.py serve` against a release rendered by `enginewright deploy` (docs/results.md, "vLLM on an
H100"). CI has no GPU: it replays them, so the code that reads a vLLM endpoint — the verify step's client, the
monitoring's metric names and alert rules — is checked against the real server's answers, not our reading of its
source."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from enginewright.serving.openai_endpoint import Endpoint, EndpointError, serving_state, wait_until_serving
from enginewright.serving.runtimes import RUNTIMES
from tests.test_monitoring import promtool, rendered

RECORDING = json.loads((Path(__file__).parent / "fixtures" / "vllm-0.26.0" / "responses.json").read_text())
MODEL_ID = RECORDING["model_id"]


def exchange(method: str, path: str, **request: Any) -> dict[str, Any]:
    """The recorded exchange for this request (its body's keys and values as sent)."""
    for item in RECORDING["exchanges"]:
        body = item["request"] if isinstance(item["request"], dict) else {}
        if item["method"] == method and item["path"] == path and all(body.get(k) == v for k, v in request.items()):
            return item
    raise KeyError((method, path, request))


class Replay(BaseHTTPRequestHandler):
    """Answers each request with the recorded answer to the most similar recorded request: same route; for
    completions, the same model and the same `stream`/`logprobs`/`max_tokens`/`stop` choices."""

    def _answer(self, item: dict[str, Any]) -> None:
        body = item["body"].encode()
        self.send_response(item["status"])
        if item["content_type"]:
            self.send_header("Content-Type", item["content_type"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        try:
            self._answer(exchange("GET", self.path))
        except KeyError:
            self._answer(exchange("GET", "/no/such/route"))

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._answer(next(i for i in RECORDING["exchanges"] if i["request"] == "{not json"))
        if body.get("model") != MODEL_ID:
            return self._answer(exchange("POST", "/v1/completions", model="no-such-model"))
        if body.get("max_tokens", 1) < 1:
            return self._answer(exchange("POST", "/v1/completions", max_tokens=-1))
        wanted = {k: body[k] for k in ("stream", "logprobs", "stop") if k in body}
        self._answer(exchange("POST", "/v1/completions", model=MODEL_ID, **wanted))

    def log_message(self, fmt, *args):
        pass


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def test_the_recordings_are_of_vllm_0_26_0_on_an_h100() -> None:
    assert RECORDING["versions"]["vllm"] == "0.26.0" and "H100" in RECORDING["versions"]["gpu"]
    assert json.loads(exchange("GET", "/version")["body"]) == {"version": "0.26.0"}
    assert MODEL_ID == "SmolLM2-135M-Instruct-v1"  # the release's versioned id, from the rendered vllm-serve.sh


def test_readiness_tells_the_release_from_another_version_on_the_real_answers(endpoint: Endpoint) -> None:
    assert serving_state(endpoint, MODEL_ID, None) == (True, f"serves {MODEL_ID!r}")
    ready, detail = serving_state(endpoint, "SmolLM2-135M-Instruct-v2", None)
    assert not ready and MODEL_ID in detail
    assert not wait_until_serving(endpoint, "SmolLM2-135M-Instruct-v2", None, 0.5).ready
    # the verify step also asks /version for the target's runtime version, as it does of trtllm-serve
    assert serving_state(endpoint, MODEL_ID, "0.26.0")[0]
    ready, detail = serving_state(endpoint, MODEL_ID, "0.27.0")
    assert not ready and "'0.26.0'" in detail


def test_the_verify_client_reads_real_completions_and_names_real_errors(endpoint: Endpoint) -> None:
    recorded = json.loads(exchange("POST", "/v1/completions", model=MODEL_ID, stop=["\n"])["body"])
    assert endpoint.complete(MODEL_ID, "The capital of France is", 4, ["\n"]) == recorded["choices"][0]["text"]
    with pytest.raises(EndpointError, match="HTTP 404 .*does not exist"):
        endpoint.complete("no-such-model", "The capital of France is", 8)
    with pytest.raises(EndpointError, match="HTTP 400 .*max_tokens must be at least 1"):
        endpoint.complete(MODEL_ID, "The capital of France is", -1)


def test_the_real_stream_is_openai_server_sent_events_closed_by_done() -> None:
    events = [line.removeprefix("data: ") for line in exchange("POST", "/v1/completions", stream=True)["body"].split("\n\n")
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and all(c["model"] == MODEL_ID for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == json.loads(exchange("POST", "/v1/completions", model=MODEL_ID)["body"])["choices"][0]["text"]


def real_families() -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(exchange("GET", "/metrics")["body"])}


def test_every_metric_the_vllm_row_names_is_in_the_real_exposition_with_its_type() -> None:
    families, names = real_families(), RUNTIMES["vllm"].metrics
    expected = {names.success: "counter", names.generation_tokens: "counter", names.e2e_latency: "histogram",
                names.ttft: "histogram", names.time_per_output_token: "histogram", names.queue_time: "histogram",
                names.waiting: "gauge", names.kv_cache_usage: "gauge"}
    for name, kind in expected.items():
        family = families.get(name.removesuffix("_total"))  # the parser names a counter's family without _total
        assert family is not None and family.type == kind, (name, family and family.type)
    reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"].samples}
    assert {"stop", "length", "abort", "error"} <= reasons  # what the error and cut-off rules select


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"vllm:[a-z_:]+", expr))


def test_every_series_the_rendered_vllm_rules_read_is_one_the_real_server_exports(tmp_path: Path) -> None:
    exported = {sample.name for family in real_families().values() for sample in family.samples}
    rules = yaml.safe_load((rendered(tmp_path, "vllm", {"status": "skipped"}) / "alerts.yml").read_text())
    read = set().union(*(metric_names(r["expr"]) for r in rules["groups"][0]["rules"]))
    assert read and read <= exported, read - exported


def promtool_series(job: str) -> list[dict[str, str]]:
    """The real exposition's series of the families the rules read, labels as scraped (+ Prometheus' `job`), its
    totals reached at a constant rate over 20 minutes; gauges held at their scraped value."""
    families, names = real_families(), RUNTIMES["vllm"].metrics
    wanted = {n.removesuffix("_total") for n in (names.success, names.generation_tokens, names.ttft, names.waiting,
                                                 names.time_per_output_token)}
    out = [{"series": f'up{{job="{job}"}}', "values": "1x30"}]
    for family in (families[n] for n in sorted(wanted)):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted({**sample.labels, "job": job}.items()))
            grows = family.type in ("counter", "histogram")
            out.append({"series": f"{sample.name}{{{labels}}}",
                        "values": f"0+{sample.value / 20:g}x30" if grows else f"{sample.value:g}x30"})
    return out


def test_the_rendered_rules_on_series_scraped_from_the_real_server(tmp_path: Path) -> None:
    """On what the real server exported after the verify step's load test: no missing-metrics, error or queue alert;
    the cut-off alert fires exactly when the recorded share of replies finishing on `length` is above the threshold
    (the load test asks a fixed number of tokens, so nearly all do); with `up` 0 the missing-metrics alert fires."""
    folder = rendered(tmp_path, "vllm", {"status": "skipped"})
    rules = {r["alert"]: r for r in yaml.safe_load((folder / "alerts.yml").read_text())["groups"][0]["rules"]}
    job = re.search(r'job="([^"]+)"', rules["ReleaseQueueDeep"]["expr"]).group(1)  # type: ignore[union-attr]
    reasons = {s.labels["finished_reason"]: s.value for s in real_families()["vllm:request_success"].samples
               if s.name.endswith("_total")}
    length_share = reasons["length"] / sum(reasons.values())
    tpot = {float(s.labels["le"]): s.value for s in real_families()["vllm:request_time_per_output_token_seconds"].samples
            if s.name.endswith("_bucket")}
    tpot_limit = float(re.search(r"> ([0-9.]+)$", rules["ReleaseTokenLatencyHigh"]["expr"]).group(1))  # type: ignore[union-attr]
    within = max((count for le, count in tpot.items() if le <= tpot_limit), default=0.0)
    tpot_p99_above = within < 0.99 * tpot[float("inf")]
    threshold = float(re.search(r"> ([0-9.]+)$", rules["ReleaseRepliesCutOff"]["expr"]).group(1))  # type: ignore[union-attr]

    def expect(name: str, fires: bool, extra: dict[str, str] | None = None) -> dict[str, Any]:
        alerts = [{"exp_labels": {**rules[name]["labels"], **(extra or {})},
                   "exp_annotations": rules[name]["annotations"]}] if fires else []
        return {"eval_time": "20m", "alertname": name, "exp_alerts": alerts}

    real = promtool_series(job)
    down = [dict(s, values="0x30") if s["series"].startswith("up{") else s for s in real]
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": real, "alert_rule_test": [
            expect("ReleaseMetricsMissing", False), expect("ReleaseErrorRate", False),
            expect("ReleaseQueueDeep", False), expect("ReleaseRepliesCutOff", length_share > threshold),
            expect("ReleaseTokenLatencyHigh", tpot_p99_above)]},
        {"interval": "1m", "input_series": down, "alert_rule_test": [
            expect("ReleaseMetricsMissing", True, {"job": job})]},
    ]}
    (folder / "real_series_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False, width=200))
    tested = promtool("test", "rules", "real_series_test.yml", cwd=folder)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert length_share > 0.9  # the recorded load: fixed-length requests (vllm bench serve --ignore-eos)
