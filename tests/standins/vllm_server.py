"""The body of tests/standins/bin/vllm: `vllm serve MODEL` (vLLM 0.26.0, what the GPU worker installs) standing in
on the CPU, so CI can run a vLLM release's own `vllm-serve.sh` through deploy, verify and rollback.

What it accepts: the command line enginewright renders, checked by enginewright.serving.runtimes.vllm (which cites
vllm-project/vllm at v0.26.0); completion bodies as vLLM's OpenAI server takes them — fields it does not use are
ignored, as vLLM ignores (and logs) unknown fields; `max_tokens` < 1 and an unknown model are refused.
What it answers is what the real server answered on the project's H100 (tests/fixtures/vllm-0.26.0/
responses.json, recorded by benchmarks/vllm_lane.py serve): the same routes, status codes, body keys, error bodies,
streaming chunks and Prometheus series names and labels (`vllm:` prefix, labels engine and model_name;
enginewright.serving.monitoring.RUNTIMES["vllm"].metrics). tests/test_vllm_standin.py asks it what was asked of the real
server and compares the answers' shapes with the recordings, so a stand-in that drifts from vLLM fails a test.

Like the real server it refuses to start `--quantization modelopt` on a checkpoint without ModelOpt's
`hf_quant_config.json` ("Cannot find the config file for modelopt": vllm-project/vllm v0.26.0 (commit ffd46bfab)
vllm/model_executor/model_loader/weight_utils.py, `get_quant_config`; seen on the H100 on 2026-12-07,
docs/results.md), so a test's host that serves the wrong weights must keep the export's quantization config.

The numbers are the CPU computation of tests/standins/openai_server.py's Engine (a ModelOpt export dequantized from
its codes, inputs quantized with the exported scales): it stands for the deployment path, not vLLM's kernels.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from enginewright.registry.webhook_server import send_body
from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.runtimes.vllm import VllmContractError, check_vllm_serve_argv
from tests.standins.openai_server import Engine, EventStream, stop_strings

VERSION = "0.26.0"
FINGERPRINT = f"vllm-{VERSION}-standin"


class VllmMetrics:
    """The series the rules read, as vLLM 0.26.0 exports them (vllm/v1/metrics/loggers.py; names and labels as
    recorded from the real server): the attributes Engine.generate updates."""

    def __init__(self, model_name: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        names = RUNTIMES["vllm"].metrics
        self.registry = CollectorRegistry()
        self.labels = {"engine": "0", "model_name": model_name}
        keys = list(self.labels)
        self.success = Counter(names.success.removesuffix("_total"), "finished requests", [*keys, "finished_reason"],
                               registry=self.registry)
        for reason in ("stop", "length", "abort", "error", "repetition"):  # all present from the start, as recorded
            self.success.labels(**self.labels, finished_reason=reason)
        self.e2e = Histogram(names.e2e_latency, "end-to-end latency", keys, registry=self.registry)
        self.ttft = Histogram(names.ttft, "time to first token", keys, registry=self.registry)
        self.tpot = Histogram(names.time_per_output_token, "time per output token", keys, registry=self.registry)
        self.queue = Histogram(names.queue_time, "queue time", keys, registry=self.registry)
        self.waiting = Gauge(names.waiting, "requests waiting", keys, registry=self.registry)
        self.generated = Counter(names.generation_tokens.removesuffix("_total"), "generated tokens", keys,
                                 registry=self.registry)
        self.kv = Gauge(names.kv_cache_usage, "KV cache usage", keys, registry=self.registry)
        for metric in (self.e2e, self.ttft, self.tpot, self.queue, self.waiting, self.generated, self.kv):
            metric.labels(**self.labels)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def error(message: str, kind: str, param: str | None, code: int) -> dict[str, Any]:
    """vLLM's ErrorResponse, as recorded (404 NotFoundError for an unknown model, 400 BadRequestError)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def make_server(engine: Engine, host: str, port: int, max_model_len: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            if self.path == "/health":
                return send_body(self, 200, b"", "application/json")
            if self.path == "/version":
                return self._json(200, {"version": VERSION})
            if self.path == "/v1/models":
                created = int(time.time())
                return self._json(200, {"object": "list", "data": [{
                    "id": engine.model_id, "object": "model", "created": created, "owned_by": "vllm",
                    "root": engine.model_id, "parent": None, "max_model_len": max_model_len,
                    "permission": [{"id": f"modelperm-{uuid.uuid4().hex[:16]}", "object": "model_permission",
                                    "created": created, "allow_create_engine": False, "allow_sampling": True,
                                    "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                                    "allow_fine_tuning": False, "organization": "*", "group": None,
                                    "is_blocking": False}]}]})
            if self.path == "/metrics":
                return send_body(self, 200, engine.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            return self._json(404, {"detail": "Not Found"})

        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/completions":
                return self._json(404, {"detail": "Not Found"})
            try:
                body = json.loads(raw or b"null")
            except json.JSONDecodeError as exc:
                return self._json(400, error(f"1 validation error: JSON decode error ({exc.msg})", "Bad Request",
                                             "body.1", 400))
            if not isinstance(body, dict) or "prompt" not in body or "model" not in body:
                return self._json(400, error("model and prompt are required", "BadRequestError", None, 400))
            if body["model"] != engine.model_id:
                return self._json(404, error(f"The model `{body['model']}` does not exist.", "NotFoundError",
                                             "model", 404))
            max_tokens = body.get("max_tokens")
            max_tokens = 16 if max_tokens is None else int(max_tokens)
            if max_tokens < 1:
                return self._json(400, error(f"max_tokens must be at least 1, got {max_tokens}. (parameter="
                                             f"max_tokens, value={max_tokens})", "BadRequestError", "max_tokens", 400))
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            if not all(isinstance(p, str) for p in prompts):
                return self._json(400, error("token-id prompts are not served by this stand-in", "BadRequestError",
                                             "prompt", 400))
            stop = stop_strings(body)
            special = bool(body.get("add_special_tokens", True))
            if body.get("stream"):
                return self._stream(body, prompts[0], max_tokens, stop, special)
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for index, prompt in enumerate(prompts):
                ids, text, finish, prompt_length = engine.generate(prompt, max_tokens, stop, special)
                completion_tokens += len(ids)
                prompt_tokens += prompt_length
                choices.append({"index": index, "text": (prompt + text) if body.get("echo") else text,
                                "logprobs": None, "finish_reason": finish, "stop_reason": stop_reason(ids, finish, stop),
                                "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None,
                                "routed_experts": None})
            self._json(200, {"id": f"cmpl-{uuid.uuid4().hex[:16]}", "object": "text_completion",
                             "created": int(time.time()), "model": body["model"], "choices": choices,
                             "service_tier": None, "system_fingerprint": FINGERPRINT,
                             "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                                       "completion_tokens": completion_tokens, "prompt_tokens_details": None},
                             "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None})

        def _stream(self, body, prompt, max_tokens, stop, special):
            response_id, created = f"cmpl-{uuid.uuid4().hex[:16]}", int(time.time())
            stream = EventStream(self, "text/event-stream; charset=utf-8", separators=(",", ":"))

            def chunk(text: str, finish: str | None, reason: str | None = None) -> dict[str, Any]:
                payload = {"id": response_id, "object": "text_completion", "created": created, "model": body["model"],
                           "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                                        "stop_reason": reason, "prompt_token_ids": None, "token_ids": None}]}
                if finish is not None:  # the last chunk names the server build, as recorded
                    payload["system_fingerprint"] = FINGERPRINT
                return payload

            ids, text, finish, prompt_tokens = engine.generate(prompt, max_tokens, stop, special,
                                                               lambda so_far: stream.send(chunk(stream.delta(so_far), None)))
            stream.send(chunk(stream.delta(text), finish, stop_reason(ids, finish, stop)))
            if (body.get("stream_options") or {}).get("include_usage"):
                stream.send({"id": response_id, "object": "text_completion", "created": created,
                             "model": body["model"], "choices": [],
                             "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(ids),
                                       "completion_tokens": len(ids), "prompt_tokens_details": None}})
            stream.close()

        def _json(self, status: int, payload: Any) -> None:
            send_body(self, status, json.dumps(payload).encode(), "application/json")

        def log_message(self, fmt, *args):
            pass

    def stop_reason(ids: list[int], finish: str, stop: list[str]) -> str | None:
        """vLLM names the stop string that ended a reply (None at end-of-sequence or length)."""
        if finish != "stop" or not stop:
            return None
        text = engine.tokenizer.decode(ids, skip_special_tokens=True)
        return next((s for s in stop if s and s in text), None)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str]) -> int:
    try:
        check_vllm_serve_argv(["vllm", *argv])
    except VllmContractError as exc:
        print(f"usage: vllm serve [model_tag] [options]\nvllm: error: {exc}", file=sys.stderr)
        return 2
    model = Path(argv[1])
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    if not (model / "config.json").is_file():
        print(f"Error: {model} is not a Hugging Face checkpoint directory (no config.json)", file=sys.stderr)
        return 1
    if options.get("--quantization") == "modelopt" and not (model / "hf_quant_config.json").is_file():
        # weight_utils.get_quant_config: ModelOptFp8Config.get_config_filenames() is ["hf_quant_config.json"]
        print("ValueError: Cannot find the config file for modelopt", file=sys.stderr)
        return 1
    served = options.get("--served-model-name", argv[1])
    config = json.loads((model / "config.json").read_text())
    max_model_len = int(options.get("--max-model-len") or config.get("max_position_embeddings") or 2048)
    engine = Engine(model, {}, model_id=served, metrics=VllmMetrics(served))
    server = make_server(engine, options.get("--host", "0.0.0.0"), int(options.get("--port", "8000")), max_model_len)
    print(f"vllm serve stand-in: serving {model} as {served!r} on port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
