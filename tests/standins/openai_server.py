"""The body of tests/standins/bin/trtllm-serve: TensorRT-LLM's OpenAI-compatible server, standing in on the CPU.

It stands for `trtllm-serve MODEL --host H --port P --extra_llm_api_options FILE` (TensorRT-LLM 1.3.0rc20, the pinned
worker image) and takes only what that takes: the command line is checked by enginewright.serving.runtimes.tensorrt_llm
(`check_serve_argv`, commands/serve.py), the options file by `check_llm_api_options`, every completion body by
`completion_request_problem` (openai_protocol.py's CompletionRequest, extra="forbid": a 400 otherwise). It answers
the routes `SERVE_ROUTES` lists, with the real responses' shapes, read in NVIDIA/TensorRT-LLM:
- tensorrt_llm/serve/openai_protocol.py @ 0076e9390e1ed11515f149eec356f5a03f4a00d8: ModelList/ModelCard (`owned_by`
  "tensorrt_llm"), CompletionResponse/CompletionResponseChoice, CompletionStreamResponse, UsageInfo, ErrorResponse;
- tensorrt_llm/serve/openai_server.py @ e7f7345e31e574b5d0918b756b871882c7346b3c: `health` (200, empty body),
  `version` ({"version"}), `get_model` (the id is the model directory's name), `create_error_response` (400
  BadRequestError);
- tensorrt_llm/serve/postprocess_handlers.py @ 01bf19231d29d8f0766e31c117d1cf39ed00d3d5: `echo` prepends the prompt
  text (`completion_response_post_processor`), stream chunks are `data: {json}\n\n` with a final usage chunk when
  `stream_options.include_usage` (`completion_stream_post_processor`); the closing `data: [DONE]` is the OpenAI
  streaming convention lm-eval and AIPerf read, not a line read in TensorRT-LLM's source;
- the Prometheus series of tensorrt_llm/metrics/collector.py @ 050f80def8df236e326949c8bd9dee10fd896a83
  (enginewright.serving.runtimes.tensorrt_llm.METRICS).

What it serves is the checkpoint MODEL names, on the CPU: a plain checkpoint as it is; a ModelOpt export as the
runtime computes it in principle — weights dequantized from the exported codes (tasks/export_verify.read_exported),
each quantized layer's input multiplied by its exported `pre_quant_scale` and quantized-dequantized with its
exported `input_scale` (FP8 E4M3 or INT8, per tensor; FP8 per token where the format says so) by ModelOpt's own CPU
formulas, in bf16. Matching those formulas matters: with `x / input_scale` instead of ModelOpt's `x * (448 / amax)`,
SmolLM2 FP8 reproduced 2 of 16 golden continuations of the simulated candidate (51 % shared before diverging);
with them, 13 of 16 (94 %) and all 40 subset answers.
It stands for the deployment path (which bytes serve, whether the endpoint answers as the build did), not for
TensorRT-LLM's kernels, whose accumulation differs.
Greedy decoding only where the request asks temperature 0 (what the verify step sends); other requests are
answered greedily too, which the real server would sample. Logprobs are not produced (a request asking for them is
answered without; the verify step never asks).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
import yaml

from enginewright.registry.webhook_server import send_body
from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.runtimes.tensorrt_llm import (
    PROMETHEUS_PATH,
    ContractError,
    check_llm_api_options,
    check_serve_argv,
    completion_request_problem,
    served_model_id,
)

VERSION = "1.3.0rc20"  # the release it stands for (enginewright.serving.runtimes.tensorrt_llm.RUNTIME.default_version)
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions when max_tokens is unset


def load_served_model(path: Path) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (path / "hf_quant_config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(path).eval()
    from tasks.export_verify import read_exported

    exported = read_exported(path)
    config = AutoConfig.from_pretrained(path)
    config.quantization_config = None
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None) or torch.bfloat16)
    state = {k: v for k, v in exported.tensors.items() if not k.endswith(("_scale", "_amax")) and
             k.removesuffix(".weight") not in exported.weights}
    state.update({f"{layer}.weight": w for layer, w in exported.weights.items()})
    dtype = next(model.parameters()).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    for layer, algo in exported.layer_algos.items():
        quantize_inputs(model.get_submodule(layer), algo, exported.tensors.get(f"{layer}.pre_quant_scale"),
                        exported.tensors.get(f"{layer}.input_scale"))
    return model.eval()


# quant_algo → how the runtime quantizes a layer's input (ModelOpt 0.47's formats: modelopt/torch/export/
# model_config.py QUANTIZATION_* and the formats table, enginewright/config/formats.py).
ACTIVATIONS = {"FP8": "fp8", "W4A8_AWQ": "fp8", "W8A8_SQ_PER_CHANNEL": "int8", "FP8_PER_CHANNEL_PER_TOKEN": "fp8_token",
               "W4A16_AWQ": None, "W8A16": None}


def fp8_qdq(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """E4M3 quantize-dequantize as ModelOpt computes it on the CPU (modelopt/torch/quantization/tensor_quant.py
    `_fp8_eager`, 0.47.0: fp32, scale = 448 / amax, multiply, clamp, cast, multiply by 1 / scale)."""
    scale = 448.0 / torch.where(amax <= 1.0 / (1 << 24), torch.ones_like(amax), amax)
    q = (x.to(torch.float32) * scale).clamp(min=-448.0, max=448.0).to(torch.float8_e4m3fn)
    return (q.to(torch.float32) * (1 / scale)).to(x.dtype)


def int8_qdq(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """INT8 quantize-dequantize as ModelOpt computes it (tensor_quant.py `_tensor_quant`, 0.47.0: fp32, narrow range,
    scale = 127 / amax, round, clamp to ±127, divide by scale)."""
    scale = 127.0 / amax
    return (torch.clamp((x.float() * scale).round_(), -127.0, 127.0) / scale).to(x.dtype)


def quantize_inputs(module: torch.nn.Module, algo: str, pre_quant_scale, input_scale) -> None:
    kind = ACTIVATIONS.get(algo)

    def hook(_module, args):
        (x,) = args
        if pre_quant_scale is not None:
            x = x * pre_quant_scale.to(x.dtype)
        if kind == "fp8" and input_scale is not None:
            x = fp8_qdq(x, input_scale.float() * 448)
        elif kind == "int8" and input_scale is not None:
            x = int8_qdq(x, input_scale.float() * 127)
        elif kind == "fp8_token":
            x = fp8_qdq(x, x.float().abs().amax(dim=-1, keepdim=True))
        return (x,)

    module.register_forward_pre_hook(hook)


class Metrics:
    """trtllm_* series as collector.py exports them (names from enginewright.serving.monitoring.RUNTIME_METRICS)."""

    def __init__(self, model_name: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        names = RUNTIMES["tensorrt_llm"].metrics
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name, "engine_type": "pytorch"}
        self.labels = labels
        self.success = Counter(names.success.removesuffix("_total"), "finished requests", [*labels, "finished_reason"],
                               registry=self.registry)
        self.errors = Counter(names.errors.removesuffix("_total"), "failed requests", list(labels),
                              registry=self.registry)
        self.e2e = Histogram(names.e2e_latency, "end-to-end latency", list(labels), registry=self.registry)
        self.ttft = Histogram(names.ttft, "time to first token", list(labels), registry=self.registry)
        self.tpot = Histogram(names.time_per_output_token, "time per output token", list(labels),
                              registry=self.registry)
        self.queue = Histogram(names.queue_time, "queue time", list(labels), registry=self.registry)
        self.waiting = Gauge(names.waiting, "requests waiting", list(labels), registry=self.registry)
        self.generated = Counter(names.generation_tokens.removesuffix("_total"), "generated tokens", list(labels),
                                 registry=self.registry)
        self.kv = Gauge(names.kv_cache_usage, "KV cache utilization", list(labels), registry=self.registry)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Engine:
    """One model, one request at a time (the lock), as a single-GPU server batches nothing here."""

    def __init__(self, model_path: Path, options: dict[str, Any], model_id: str | None = None,
                 metrics: Any = None) -> None:
        """`model_id`, `metrics`: what another runtime's stand-in serves as (tests/standins/vllm_server.py)."""
        from transformers import AutoTokenizer

        self.model_path = model_path
        self.model_id = model_id or served_model_id(str(model_path))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = load_served_model(model_path)
        self.options = options
        self.lock = threading.Lock()
        self.metrics = metrics or Metrics(self.model_id)
        self.waiting = 0

    def generate(self, prompt: str, max_tokens: int, stop: list[str], add_special_tokens: bool,
                 on_token=None) -> tuple[list[int], str, str, int]:
        """(token ids, text, finish_reason, prompt tokens) of a greedy continuation."""
        queued = time.perf_counter()
        self.waiting += 1
        self.metrics.waiting.labels(**self.metrics.labels).set(self.waiting)
        with self.lock:
            self.waiting -= 1
            self.metrics.waiting.labels(**self.metrics.labels).set(self.waiting)
            started = time.perf_counter()
            self.metrics.queue.labels(**self.metrics.labels).observe(started - queued)
            ids = self.tokenizer(prompt, add_special_tokens=add_special_tokens, return_tensors="pt")["input_ids"]
            generated: list[int] = []
            text, finish, first = "", "length", 0.0
            past, step_input = None, ids
            with torch.no_grad():
                for _ in range(max_tokens):
                    out = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    token = int(out.logits[0, -1].argmax())
                    if not generated:
                        first = time.perf_counter() - queued
                    if token == self.tokenizer.eos_token_id:
                        finish = "stop"
                        break
                    generated.append(token)
                    text = self.tokenizer.decode(generated, skip_special_tokens=True)
                    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
                    if cut >= 0:
                        text, finish = text[:cut], "stop"
                        break
                    if on_token is not None:
                        on_token(text)
                    step_input = torch.tensor([[token]])
            elapsed = time.perf_counter() - queued
            labels = self.metrics.labels
            self.metrics.success.labels(**labels, finished_reason=finish).inc()
            self.metrics.e2e.labels(**labels).observe(elapsed)
            self.metrics.ttft.labels(**labels).observe(first)
            if len(generated) > 1:
                self.metrics.tpot.labels(**labels).observe((elapsed - first) / (len(generated) - 1))
            self.metrics.generated.labels(**labels).inc(len(generated))
            return generated, text, finish, int(ids.shape[1])


def error_body(message: str, code: int = 400) -> dict[str, Any]:
    """openai_protocol.py ErrorResponse, as openai_server.py's create_error_response sends it."""
    return {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": code}


def stop_strings(body: dict[str, Any]) -> list[str]:
    """A completion request's `stop`: absent, one string or a list (OpenAI's completions API, both servers)."""
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


class EventStream:
    """A streamed completion as both runtimes' servers send it: `data: {json}` events in HTTP chunked transfer,
    closed by `data: [DONE]`; `delta(text)` is the part of the text generated so far that was not sent yet."""

    def __init__(self, handler: BaseHTTPRequestHandler, content_type: str,
                 separators: tuple[str, str] | None = None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self.wfile, self.separators, self.sent = handler.wfile, separators, 0

    def send(self, payload: dict[str, Any]) -> None:
        data = f"data: {json.dumps(payload, separators=self.separators)}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def delta(self, text: str) -> str:
        new, self.sent = text[self.sent:], len(text)
        return new

    def close(self) -> None:
        done = b"data: [DONE]\n\n"
        self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        self.wfile.flush()


def make_server(engine: Engine, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            if self.path == "/health":
                return send_body(self, 200, b"", "text/plain")
            if self.path == "/version":
                return self._json(200, {"version": VERSION})
            if self.path == "/v1/models":
                return self._json(200, {"object": "list", "data": [
                    {"id": engine.model_id, "object": "model", "created": int(time.time()), "owned_by": "tensorrt_llm"}]})
            if self.path == "/metrics":
                return self._json(200, [])
            if self.path == PROMETHEUS_PATH and engine.options.get("return_perf_metrics"):
                # mounted only with return_perf_metrics (enginewright.serving.runtimes.tensorrt_llm.LlmApiOptions)
                return send_body(self, 200, engine.metrics.exposition(), "text/plain; version=0.0.4")
            return self._json(404, {"detail": "Not Found"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/v1/completions":
                return self._json(404, {"detail": "Not Found"})
            try:
                body = json.loads(raw or b"null")
            except json.JSONDecodeError:
                return self._json(400, error_body("JSON decode error"))
            problem = completion_request_problem(body)
            if problem is not None:
                engine.metrics.errors.labels(**engine.metrics.labels).inc()
                return self._json(400, error_body(problem))
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            if not all(isinstance(p, str) for p in prompts):
                return self._json(400, error_body("token-id prompts are not served by this stand-in"))
            stop = stop_strings(body)
            max_tokens = int(body.get("max_tokens") or DEFAULT_MAX_TOKENS)
            special = bool(body.get("add_special_tokens", True))
            if body.get("stream"):
                return self._stream(body, prompts[0], max_tokens, stop, special)
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for index, prompt in enumerate(prompts):
                ids, text, finish, prompt_length = engine.generate(prompt, max_tokens, stop, special)
                completion_tokens += len(ids)
                prompt_tokens += prompt_length
                choices.append({"index": index, "text": (prompt + text) if body.get("echo") else text,
                                "token_ids": None, "logprobs": None, "context_logits": None,
                                "finish_reason": finish, "stop_reason": None, "disaggregated_params": None,
                                "avg_decoded_tokens_per_iter": None})
            self._json(200, {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                             "created": int(time.time()), "model": body["model"], "choices": choices,
                             "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                                       "completion_tokens": completion_tokens, "prompt_tokens_details": None},
                             "prompt_token_ids": None})

        def _stream(self, body, prompt, max_tokens, stop, special):
            response_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
            stream = EventStream(self, "text/event-stream")

            def chunk(text: str, finish: str | None) -> dict[str, Any]:
                return {"id": response_id, "object": "text_completion", "created": created, "model": body["model"],
                        "choices": [{"index": 0, "text": text, "token_ids": None, "logprobs": None,
                                     "finish_reason": finish, "stop_reason": None,
                                     "avg_decoded_tokens_per_iter": None}], "usage": None}

            ids, text, finish, prompt_tokens = engine.generate(prompt, max_tokens, stop, special,
                                                               lambda so_far: stream.send(chunk(stream.delta(so_far), None)))
            stream.send(chunk(stream.delta(text), finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                stream.send({"id": response_id, "object": "text_completion", "created": created, "model": body["model"],
                             "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(ids),
                                                      "total_tokens": prompt_tokens + len(ids)}})
            stream.close()

        def _json(self, status: int, payload: Any) -> None:
            send_body(self, status, json.dumps(payload).encode(), "application/json")

        def log_message(self, fmt, *args):
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str]) -> int:
    try:
        check_serve_argv(["trtllm-serve", *argv])
    except ContractError as exc:
        print(f"Usage: trtllm-serve [OPTIONS] MODEL\nError: {exc}", file=sys.stderr)
        return 2
    model = Path(argv[0])
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    llm_api: dict[str, Any] = {}
    config = options.get("--extra_llm_api_options") or options.get("--config")
    if config:
        llm_api = yaml.safe_load(Path(config).read_text()) or {}
        try:
            check_llm_api_options(llm_api)
        except ContractError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    if not (model / "config.json").is_file():
        print(f"Error: {model} is not a Hugging Face checkpoint directory (no config.json)", file=sys.stderr)
        return 1
    engine = Engine(model, llm_api)
    server = make_server(engine, options.get("--host", "localhost"), int(options.get("--port", "8000")))
    print(f"trtllm-serve stand-in: serving {model} as {engine.model_id!r} on port {server.server_address[1]}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
