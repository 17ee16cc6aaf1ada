"""TensorRT-LLM as a serving runtime and build lane: what it accepts and returns, as far as enginewright passes or
reads it — the contract the TensorRT-LLM lane is written against, and the only thing the test stand-ins
(tests/standins/) may accept — the formats it serves, its metric names, the release it renders (`llm_api.yaml`,
`trtllm-serve.sh`, a Triton model repository) and the model id it reports.

Nothing here can be run on a machine without TensorRT-LLM, so every name below was read in TensorRT-LLM's own
source; each group cites repository, path and commit. A name our code uses that is not here is a contract gap:
the rendered `llm_api.yaml` is validated against `LlmApiOptions` on every build, and the `trtllm-bench`
command lines against `check_bench_argv` before they run.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from enginewright.errors import EnginewrightError
from enginewright.serving.runtimes.base import (
    ADA,
    BLACKWELL,
    HOPPER,
    ReleaseFiles,
    RuntimeMetrics,
    ServingRow,
    ServingRuntime,
    ServingTarget,
    write_script,
)


class ContractError(EnginewrightError):
    """Something enginewright would pass to TensorRT-LLM is not what TensorRT-LLM accepts."""


class _Strict(BaseModel):
    # TensorRT-LLM's StrictBaseModel: `extra = "forbid"` (tensorrt_llm/llmapi/utils.py, and llm_args.py below).
    model_config = ConfigDict(extra="forbid")


# NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py @ 0004396720054fd8e205cbf616f21f0b57c6b412 (and the same
# class in the stored copy of that file read by id 7019226376): KvCacheConfig(StrictBaseModel, PybindMirror).
class KvCacheConfigOptions(_Strict):
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    free_gpu_memory_fraction: float | None = Field(default=0.9, ge=0, le=1)
    host_cache_size: int | None = None  # bytes
    dtype: str = "auto"  # "pure python field ... only for the PyTorch backend"
    tokens_per_block: int = 32


# Same file: BaseCudaGraphConfig (batch_sizes, max_batch_size: NonNegativeInt, enable_padding); the older
# CudaGraphConfig(StrictBaseModel) has the same three fields.
class CudaGraphConfigOptions(_Strict):
    batch_sizes: list[int] | None = None
    max_batch_size: int = Field(default=0, ge=0)
    enable_padding: bool = False


# Same file: CapacitySchedulerPolicy(StrEnum) = MAX_UTILIZATION | GUARANTEED_NO_EVICT | STATIC_BATCH;
# SchedulerConfig.capacity_scheduler_policy, context_chunking_policy (FIRST_COME_FIRST_SERVED | EQUAL_PROGRESS |
# FORCE_CHUNK).
class SchedulerConfigOptions(_Strict):
    capacity_scheduler_policy: Literal["MAX_UTILIZATION", "GUARANTEED_NO_EVICT", "STATIC_BATCH"] = "GUARANTEED_NO_EVICT"
    context_chunking_policy: Literal["FIRST_COME_FIRST_SERVED", "EQUAL_PROGRESS", "FORCE_CHUNK"] | None = None


class LlmApiOptions(_Strict):
    """The keys an `llm_api.yaml` of ours may hold: LLM-API arguments (BaseLlmArgs / TorchLlmArgs, extra=forbid)
    that `trtllm-serve --extra_llm_api_options`, `trtllm-bench --extra_llm_api_options` and `LLM(**options)` take.
    """

    # NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py @ 00209af149e7774406881a37283dce303571eb11: get_llm_args
    # puts "backend" into the LLM arguments the YAML is merged into; launch_server dispatches on
    # pytorch | _autodeploy | tensorrt (alias trt).
    backend: Literal["pytorch", "tensorrt", "_autodeploy"] = "pytorch"
    # llm_args.py @ 0004396…, BaseLlmArgs
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    trust_remote_code: bool = False
    max_batch_size: int | None = Field(default=2048, ge=1)
    max_num_tokens: int | None = Field(default=8192, ge=1)
    max_seq_len: int | None = Field(default=None, ge=1)
    kv_cache_config: KvCacheConfigOptions = Field(default_factory=KvCacheConfigOptions)
    scheduler_config: SchedulerConfigOptions = Field(default_factory=SchedulerConfigOptions)
    # TorchLlmArgs.cuda_graph_config: Optional[CudaGraphConfig] (None: no CUDA graphs)
    cuda_graph_config: CudaGraphConfigOptions | None = None
    # Monitoring. llm_args.py @ 0004396…: BaseLlmArgs.return_perf_metrics (default False, "prototype") — trtllm-serve
    # mounts Prometheus' /prometheus/metrics only when it is true (openai_server.py @ 00057725d9a6591f033e44f31c219e
    # 2426827bb7, `register_routes`: `if self.generator.args.return_perf_metrics: self.mount_metrics()`);
    # TorchLlmArgs.enable_iter_perf_stats (default False, "prototype"): the iteration stats behind the queue and
    # KV-cache gauges and the JSON /metrics route (`get_iteration_stats`).
    return_perf_metrics: bool = False
    enable_iter_perf_stats: bool = False


def check_llm_api_options(options: dict[str, Any]) -> LlmApiOptions:
    """The options validated against the contract; one ContractError line naming the bad key otherwise."""
    from pydantic import ValidationError

    try:
        return LlmApiOptions.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContractError(f"llm_api.yaml key {where!r}: {first['msg']} (TensorRT-LLM's LLM-API arguments; "
                            "enginewright/serving/runtimes/tensorrt_llm.py)") from None


# --- trtllm-bench ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """A click command as far as we use it: its options (name → takes a value), required ones, subcommands."""

    options: dict[str, bool]
    required: frozenset[str] = frozenset()
    subcommands: dict[str, Command] = field(default_factory=dict)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


# NVIDIA/TensorRT-LLM tensorrt_llm/bench/dataset/prepare_synthetic_data.py @ f00d21a3c0990c7f1ec1176ca85936b9c5f540cd
TOKEN_NORM_DIST = Command(
    options={"--num-requests": True, "--input-mean": True, "--input-stdev": True, "--output-mean": True,
             "--output-stdev": True},
    required=frozenset({"--num-requests", "--input-mean", "--input-stdev", "--output-mean", "--output-stdev"}),
)
# tensorrt_llm/bench/dataset/prepare_dataset.py @ 0c8de69a1ca6213eebb20a51873890ff128666c2: the tokenizer comes from
# `ctx.obj.model or ctx.obj.checkpoint_path` — trtllm-bench's --model first, so --model must be loadable offline.
PREPARE_DATASET = Command(
    options={"--output": True, "--random-seed": True, "--task-id": True, "--rand-task-id": True, "--lora-dir": True,
             "--log-level": True, "--trust-remote-code": False},
    subcommands={"token-norm-dist": TOKEN_NORM_DIST},
)
# tensorrt_llm/bench/benchmark/throughput.py @ 000a01de66f0eab4ab05640711f0253f50f5209c (only
# --extra_llm_api_options there; `--config` is an alias on newer lines only)
THROUGHPUT = Command(
    options={"--engine_dir": True, "--backend": True, "--extra_llm_api_options": True, "--max_batch_size": True,
             "--max_num_tokens": True, "--max_seq_len": True, "--beam_width": True,
             "--kv_cache_free_gpu_mem_fraction": True, "--dataset": True, "--eos_id": True, "--modality": True,
             "--max_input_len": True, "--num_requests": True, "--warmup": True, "--target_input_len": True,
             "--target_output_len": True, "--tp": True, "--pp": True, "--ep": True, "--cluster_size": True,
             "--concurrency": True, "--streaming": False, "--report_json": True, "--iteration_log": True,
             "--output_json": True, "--request_json": True, "--enable_chunked_context": False,
             "--scheduler_policy": True},
    choices={"--backend": ("pytorch", "tensorrt", "_autodeploy"),
             "--scheduler_policy": ("guaranteed_no_evict", "max_utilization")},
)
# tensorrt_llm/commands/bench.py @ 0c9a37db1f06912c2109c13272029bd7a13cb248 (group options; `--model` is "The
# Huggingface name of the model"). prepare-dataset is a subcommand of trtllm-bench on newer lines (bench.py @
# cf44a1ccee7dd3381a7b4c49a8318c0c3ae4426b registers it); older ones ship it as benchmarks/cpp/prepare_dataset.py.
TRTLLM_BENCH = Command(
    options={"--model": True, "-m": True, "--model_path": True, "--workspace": True, "-w": True,
             "--log_level": True, "--revision": True},
    required=frozenset({"--model"}),
    subcommands={"throughput": THROUGHPUT, "prepare-dataset": PREPARE_DATASET},
)

# tensorrt_llm/bench/dataclasses/reporting.py @ 0249976575050d2c624a5f285683c66de311a3b7,
# ReportUtility.get_statistics_dict: the sections of `--report_json` and the keys of its "performance" section.
BENCH_REPORT_SECTIONS = ("engine", "machine", "world_info", "request_info", "performance", "dataset")
BENCH_PERFORMANCE_KEYS = ("total_latency_ms", "avg_request_latency_ms", "request_throughput_req_s",
                          "system_output_throughput_tok_s", "system_total_throughput_tok_s",
                          "output_throughput_per_user_tok_s", "output_throughput_per_gpu_tok_s",
                          "request_latency_percentiles_ms")
OUTPUT_THROUGHPUT = "performance.system_output_throughput_tok_s"  # total output tokens / end-to-end latency


def check_bench_argv(argv: list[str], command: Command = TRTLLM_BENCH, name: str = "trtllm-bench") -> None:
    """Walk a command line as click would (options, then a subcommand); one ContractError for a flag, value or
    subcommand the real command does not take, or a required option missing."""
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in command.subcommands:
            _check_required(command, seen, name)
            return check_bench_argv(argv[i + 1:], command.subcommands[word], f"{name} {word}")
        if word not in command.options:
            known = sorted(command.options) + sorted(command.subcommands)
            raise ContractError(f"{name} does not take {word!r}; it takes {', '.join(known)}")
        if command.options[word]:
            if i + 1 >= len(argv):
                raise ContractError(f"{name} {word} needs a value")
            value = argv[i + 1]
            if word in command.choices and value not in command.choices[word]:
                raise ContractError(f"{name} {word} {value!r}: not one of {', '.join(command.choices[word])}")
            i += 1
        seen.add({"-m": "--model", "-w": "--workspace"}.get(word, word))
        i += 1
    _check_required(command, seen, name)
    if command.subcommands:  # a click group run without a subcommand does nothing
        raise ContractError(f"{name} needs a subcommand: {', '.join(command.subcommands)}")


def _check_required(command: Command, seen: set[str], name: str) -> None:
    missing = sorted(command.required - seen)
    if missing:
        raise ContractError(f"{name} needs {', '.join(missing)}")


def check_bench_report(report: dict[str, Any]) -> None:
    """A `--report_json` document has the real report's sections and performance keys."""
    missing = [s for s in BENCH_REPORT_SECTIONS if s not in report]
    missing += [f"performance.{k}" for k in BENCH_PERFORMANCE_KEYS if k not in report.get("performance", {})]
    if missing:
        raise ContractError(f"trtllm-bench report lacks {', '.join(missing)} (reporting.py get_statistics_dict)")


# --- trtllm-serve ---------------------------------------------------------------------------------------------
# tensorrt_llm/commands/serve.py @ 00209af149e7774406881a37283dce303571eb11: `serve MODEL` and the options we pass.
TRTLLM_SERVE_OPTIONS = frozenset({"--host", "--port", "--backend", "--config", "--extra_llm_api_options",
                                  "--tokenizer", "--tensor_parallel_size", "--tp_size", "--log_level"})


def check_serve_argv(argv: list[str]) -> None:
    """`trtllm-serve MODEL [--option value ...]` with options the real command takes (all take a value here)."""
    if len(argv) < 2 or argv[0] != "trtllm-serve" or argv[1].startswith("-"):
        raise ContractError(f"not a `trtllm-serve MODEL ...` command line: {argv[:2]}")
    options = argv[2:]
    for flag in options[::2]:
        if flag not in TRTLLM_SERVE_OPTIONS:
            raise ContractError(f"trtllm-serve does not take {flag!r}; it takes {', '.join(sorted(TRTLLM_SERVE_OPTIONS))}")
    if len(options) % 2:
        raise ContractError(f"trtllm-serve {options[-1]} needs a value")


# --- trtllm-serve's HTTP API (what the verify step calls, and tests/standins/bin/trtllm-serve serves) -----------
# tensorrt_llm/serve/openai_server.py @ e7f7345e31e574b5d0918b756b871882c7346b3c, `register_routes`: GET /health
# (200, empty body), GET /version ({"version": ...}), GET /v1/models, POST /v1/completions, POST
# /v1/chat/completions, GET /metrics (iteration stats as JSON); Prometheus text at /prometheus/metrics
# only where the LLM arguments set `return_perf_metrics: true` (openai_server.py @ 00057725…, `mount_metrics`; a
# release's llm_api.yaml always does: MONITORING_OPTIONS below). `get_model`: the one ModelCard's id is the *name* of the model
# directory when MODEL is a directory (`Path(self.model).name`), else MODEL as given; owned_by "tensorrt_llm".
SERVE_ROUTES = {"GET": ("/health", "/version", "/v1/models", "/metrics", "/prometheus/metrics"),
                "POST": ("/v1/completions", "/v1/chat/completions")}
PROMETHEUS_PATH = "/prometheus/metrics"
# tensorrt_llm/serve/openai_protocol.py @ 0076e9390e1ed11515f149eec356f5a03f4a00d8: `CompletionRequest`
# (OpenAIBaseModel: extra="forbid", so any other key is a 400 BadRequestError); `model` and `prompt` required;
# a non-empty `suffix` is refused ("suffix is not supported"); `stream_options` only with `stream`.
COMPLETION_REQUEST_FIELDS = frozenset({
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
    "lora_request", "prompt_ignore_length", "use_beam_search", "top_k", "top_p_min", "min_p", "repetition_penalty",
    "length_penalty", "early_stopping", "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens",
    "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens", "return_context_logits",
    "detokenize", "thinking_token_budget", "add_special_tokens", "response_format", "disaggregated_params",
    "priority", "conversation_params"})
COMPLETION_REQUIRED = ("model", "prompt")


def served_model_id(model: str) -> str:
    """The id trtllm-serve's /v1/models reports for `trtllm-serve MODEL`: a directory's name, else MODEL."""
    path = Path(model)
    return path.name if path.is_dir() else model


def completion_request_problem(body: object) -> str | None:
    """None when trtllm-serve's CompletionRequest would validate `body`; else its kind of message."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary or object to extract fields from"
    for key in COMPLETION_REQUIRED:
        if key not in body:
            return f"{key}: Field required"
    extra = sorted(set(body) - COMPLETION_REQUEST_FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if body.get("suffix"):
        return "suffix is not supported"
    if body.get("stream_options") and not body.get("stream"):
        return "Stream options can only be defined when stream is true."
    return None


# --- generation: SamplingParams, prompts, prompt log-probabilities --------------------------------------------
# NVIDIA/TensorRT-LLM tensorrt_llm/sampling_params.py @ a98a9061d72f6fd39f5d055ebdd2c6878a100e2c:
# `@dataclass(slots=True, kw_only=True) class SamplingParams` — an unknown keyword is a TypeError. The fields
# enginewright passes, with the real defaults (max_tokens 32; temperature None: greedy when top_p/top_k unset too;
# prompt_logprobs "Number of log probabilities to return per prompt token"; add_special_tokens True).
SAMPLING_PARAMS_FIELDS: dict[str, Any] = {
    "max_tokens": 32, "temperature": None, "prompt_logprobs": None, "logprobs": None, "stop": None,
    "add_special_tokens": True, "detokenize": True,
}
# tensorrt_llm/inputs/data.py @ 2a9abd9536aa62ad3e4b9314be9286b1b1be523b: PromptInputs = str | list[int] |
# TextPrompt | TokensPrompt; a TokensPrompt is the dict {"prompt_token_ids": [...]}.
TOKENS_PROMPT_KEY = "prompt_token_ids"
# tensorrt_llm/executor/result.py @ a678b91aafbeff265cd0b764abb59d7def624ac2: `RequestOutput.outputs[0].prompt_logprobs`
# is `TokenLogprobs = list[dict[int, Logprob]]`, `Logprob(logprob: float, rank: Optional[int])`, one dict per prompt
# position, computed from the context logits (`compute_logprobs`, result.py @ 005bc848893f575ec14b45d6b13139360d67c790
# and executor/base_worker.py @ 7b437aaa73bf5a44b1102aee5c631074da763b8f `_compute_pytorch_prompt_logprobs`): entry i
# is the distribution that predicted token i + 1 — aligned to the *next* token. Up to 1.3.0rc10 an entry holds only
# the top-k ids, so a prompt token outside the top k is absent; from 1.3.0rc11 the worker scores
# prompt_token_ids[1:] + the first generated token, so entry i always holds token i + 1 (NVIDIA/Model-Optimizer
# examples/llm_eval/lm_eval_trtllm.py @ 622b97c26456f9520136e866260077bdeea485a6, which corrects lm-eval's reading).
PROMPT_TOKEN_LOGPROBS_SINCE = "1.3.0rc11"
# The TensorRT (engine) backend, `tensorrt_llm._tensorrt_engine.LLM` and `trtllm-build`, ships up to 1.3.0rc20 and
# was removed after it (../shared/FIELD_NOTES.md, "TensorRT-LLM releases").
LAST_ENGINE_RELEASE = "1.3.0rc20"


def check_sampling_params(kwargs: dict[str, Any]) -> None:
    """The SamplingParams keywords enginewright passes are real fields; one ContractError line otherwise."""
    unknown = sorted(set(kwargs) - set(SAMPLING_PARAMS_FIELDS))
    if unknown:
        raise ContractError(f"SamplingParams has no field {', '.join(unknown)}; enginewright passes only "
                            f"{', '.join(SAMPLING_PARAMS_FIELDS)} (tensorrt_llm/sampling_params.py)")


def _parsed(version: str | None):
    """A TensorRT-LLM version under PEP 440 ("1.3.0rc11" < "1.3.0"); None when absent or not a version."""
    from packaging.version import InvalidVersion, Version

    try:
        return None if version is None else Version(version)
    except InvalidVersion:
        return None


def version_at_least(version: str | None, minimum: str) -> bool:
    """`version` ≥ `minimum`; None (not installed) or an unparsable version is never enough."""
    parsed = _parsed(version)
    return parsed is not None and parsed >= _parsed(minimum)


def version_at_most(version: str | None, maximum: str) -> bool:
    """`version` ≤ `maximum`; None (not installed) or an unparsable version never is."""
    parsed = _parsed(version)
    return parsed is not None and parsed <= _parsed(maximum)


# --- the legacy TensorRT-engine lane (up to LAST_ENGINE_RELEASE) ----------------------------------------------
# NVIDIA/TensorRT-LLM tensorrt_llm/_tensorrt_engine/llm.py @ e3cc74ce1dd8ad7323891f9e56522b685d9a8fe7:
# `LLM(model, tokenizer=None, ..., **kwargs)` with `build_config` among the LLM arguments (`self.args.build_config`),
# `save(engine_dir: str)` copies the built engine ("The engine is not built yet." otherwise), `shutdown()` from
# BaseLLM. The BuildConfig fields read there and passed by enginewright:
BUILD_CONFIG_FIELDS = ("max_batch_size", "max_num_tokens", "max_seq_len", "max_beam_width")


def check_build_config(kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - set(BUILD_CONFIG_FIELDS))
    if unknown:
        raise ContractError(f"BuildConfig field {', '.join(unknown)} is not one enginewright may pass; it passes "
                            f"{', '.join(BUILD_CONFIG_FIELDS)} (tensorrt_llm/_tensorrt_engine/llm.py)")


# --- what it serves ---------------------------------------------------------------------------------------------
_SOURCE = "NVIDIA/TensorRT-LLM; ../shared/FIELD_NOTES.md"
ROWS = (
    ServingRow("fp8", "1.0", ADA, _SOURCE),
    ServingRow("int8_sq", "1.0", None, _SOURCE),
    ServingRow("int4_awq", "1.0", None, _SOURCE),
    ServingRow("w4a8_awq", "1.0", ADA, _SOURCE),
    ServingRow("int8_wo", "1.0", None, _SOURCE),
    ServingRow("fp8_pcpt", "1.0", ADA, _SOURCE),
    ServingRow("nvfp4", "1.0", BLACKWELL, _SOURCE),
    ServingRow("nvfp4", "1.3.0rc20", HOPPER, _SOURCE + " (Marlin NVFP4 kernels for Hopper)"),
    ServingRow("nvfp4_awq", "1.0", BLACKWELL, _SOURCE),
    ServingRow("mxfp8", "1.0", BLACKWELL, _SOURCE),
    ServingRow("mxfp4", "1.0", BLACKWELL, _SOURCE),
)
# A MIXED_PRECISION checkpoint (an AutoQuantize mix) names a quant_algo per layer in hf_quant_config.json's
# `quantized_layers`. TensorRT-LLM's PyTorch backend reads each into that layer's own QuantConfig
# (NVIDIA/TensorRT-LLM tensorrt_llm/_torch/model_config.py @ 008e0af8980fc560003631ba4ac37828836a91c8,
# ModelConfig._build_modelopt_quant_config) and a fused q/k/v or gate/up Linear takes its first member's
# (tensorrt_llm/_torch/models/modeling_utils.py @ 000a01de66f0eab4ab05640711f0253f50f5209c,
# DecoderModelForCausalLM.__post_init__); the version is the pinned worker image's, the oldest checked.
MIXED_PRECISION_SINCE = "1.3.0rc20"

# NVIDIA/TensorRT-LLM tensorrt_llm/metrics/collector.py @ 050f80def8df236e326949c8bd9dee10fd896a83
# (`metric_prefix = "trtllm_"`; counters gain `_total` in the exposition), served at /prometheus/metrics
# (tensorrt_llm/serve/openai_server.py; TensorRT-LLM PRs #12545, #12636). The same collector at
# @ 89fd9b74ab7ae753b4c6b3db25a400dca7ea54a0 has no prefix: the scrape job renames those series (`relabel`), so one
# rule file serves both.
UNPREFIXED = ("request_success_total", "e2e_request_latency_seconds_(bucket|sum|count)",
              "time_to_first_token_seconds_(bucket|sum|count)",
              "time_per_output_token_seconds_(bucket|sum|count)", "request_queue_time_seconds_(bucket|sum|count)")
METRICS = RuntimeMetrics(
    metrics_path="/prometheus/metrics", success="trtllm_request_success_total", errors="trtllm_request_error_total",
    e2e_latency="trtllm_e2e_request_latency_seconds", ttft="trtllm_time_to_first_token_seconds",
    time_per_output_token="trtllm_time_per_output_token_seconds", queue_time="trtllm_request_queue_time_seconds",
    waiting="trtllm_num_requests_waiting", generation_tokens="trtllm_generation_tokens_total",
    kv_cache_usage="trtllm_kv_cache_utilization", source="tensorrt_llm/metrics/collector.py @ 050f80d",
    relabel=({"source_labels": ["__name__"], "regex": f"({'|'.join(UNPREFIXED)})", "target_label": "__name__",
              "replacement": "trtllm_${1}"},))


# --- the release it renders -------------------------------------------------------------------------------------
# Every release renders Prometheus rules (prometheus/), so its server must export what they read: trtllm-serve mounts
# /prometheus/metrics only with return_perf_metrics, and its queue and KV-cache gauges need the iteration stats
# (LlmApiOptions above cites both). Without them every alert would be blind.
MONITORING_OPTIONS = {"return_perf_metrics": True, "enable_iter_perf_stats": True}
TRITON_MODEL = "tensorrt_llm"
TRITON_TEMPLATE_FILES = ("config.pbtxt", "1/model.py", "1/helpers.py")
# Triton's LLM-API model keeps these two keys for itself; the rest of model.yaml is LLM() arguments.
TRITON_CONFIG = {"max_batch_size": 0, "decoupled": False}


def serving_options(bundle_dir: Path, target: ServingTarget) -> dict[str, Any]:
    """The bundle's llm_api.yaml with the target's overrides and the monitoring switches applied."""
    options = yaml.safe_load((bundle_dir / "llm_api.yaml").read_text()) or {}
    options.update(MONITORING_OPTIONS)
    if target.tensor_parallel_size is not None:
        options["tensor_parallel_size"] = target.tensor_parallel_size
    options["trust_remote_code"] = False
    if target.serve_legacy_engine:
        options["backend"] = "tensorrt"
    check_llm_api_options(options)
    return options


def served_path(bundle_dir: Path, target: ServingTarget) -> Path:
    """What TensorRT-LLM loads: the legacy engine folder where the target serves engines, else the checkpoint."""
    return bundle_dir / ("engine" if target.serve_legacy_engine else "checkpoint")


def serve_command(model_path: Path, llm_api_yaml: Path, target: ServingTarget) -> list[str]:
    argv = ["trtllm-serve", str(model_path), "--host", target.host, "--port", str(target.port),
            "--extra_llm_api_options", str(llm_api_yaml)]
    check_serve_argv(argv)
    return argv


def render(folder: Path, bundle_dir: Path, manifest: Mapping[str, Any], target: ServingTarget, served_as: str,
           model_path: Path) -> ReleaseFiles:
    options = serving_options(bundle_dir, target)
    (folder / "llm_api.yaml").write_text(yaml.safe_dump(options, sort_keys=False))
    command = serve_command(Path(served_as), Path("llm_api.yaml"), target)
    write_script(folder / "trtllm-serve.sh", "serve with TensorRT-LLM's OpenAI-compatible server, from this folder.",
                 command)
    _render_triton(folder / "triton", model_path, options, target)
    return ReleaseFiles(command, {"trtllm_serve": command, "triton_model_repository": "triton"})


def _render_triton(repository: Path, model_path: Path, options: dict[str, Any], target: ServingTarget) -> None:
    model = repository / TRITON_MODEL
    (model / "1").mkdir(parents=True)
    model_yaml = {"model": str(model_path), **options, "triton_config": dict(TRITON_CONFIG)}
    (model / "1" / "model.yaml").write_text(yaml.safe_dump(model_yaml, sort_keys=False))
    if target.triton_llmapi_template is not None:
        for name in TRITON_TEMPLATE_FILES:
            shutil.copy2(target.triton_llmapi_template / name, model / name)
        return
    (repository / "README.md").write_text(
        "Triton model repository for TensorRT-LLM's LLM-API model. Before starting Triton, copy `config.pbtxt`,\n"
        "`1/model.py` and `1/helpers.py` from `triton_backend/all_models/llmapi/tensorrt_llm/` of the TensorRT-LLM\n"
        "release your Triton image runs into `tensorrt_llm/` (or set the target's `triton_llmapi_template` and\n"
        "deploy again), then: `tritonserver --model-repository=<this folder>`.\n")


def release_model_id(deployment: Mapping[str, Any]) -> str:
    """trtllm-serve reports the served directory's name (`served_model_id`): the release's model link."""
    return Path(deployment.get("served_as") or deployment["served_path"]).name


def describe(deployment: Mapping[str, Any], release: Path) -> str:
    return (f"- trtllm-serve: `{' '.join(deployment['trtllm_serve'])}`\n"
            f"- Triton model repository: `{release / 'triton'}`\n")


RUNTIME = ServingRuntime(
    name="tensorrt_llm", label="TensorRT-LLM",
    default_version="1.3.0rc20",  # the worker image's pin (docker/gpu-worker.Dockerfile)
    rows=ROWS, mixed_precision_since=MIXED_PRECISION_SINCE, metrics=METRICS, script="trtllm-serve.sh",
    served_path=served_path, parallelism=serving_options, render=render, served_model_id=release_model_id,
    describe=describe)
