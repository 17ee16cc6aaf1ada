"""A deploy target: the GPU a bundle will be served on, and where its serving configuration is rendered.

Targets are small YAML files (`specs/targets/*.yaml`), validated here at the edge like build specs:

    name: h100-serving
    gpu: NVIDIA H100 80GB HBM3
    compute_capability: "9.0"
    runtime: tensorrt_llm           # or vllm
    tensorrt_version: "10.13"     # only needed to serve a legacy TensorRT engine
    port: 8000
"""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from enginewright.config.spec import read_yaml_mapping
from enginewright.errors import InputError, describe_validation_error
from enginewright.serving.runtimes import RUNTIMES, RuntimeName
from enginewright.serving.serving_runtimes import parse_version


class VerifyPolicy(BaseModel):
    """How a switched release is verified against the target's endpoint (flows/verify.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ready_timeout_s: float = Field(default=600.0, gt=0, le=86400, description="How long to wait for the endpoint to "
                                   "serve the new release (/health, /v1/models, /version) before failing it.")
    min_golden_prefix: float = Field(default=0.5, ge=0, le=1, description="Mean share of each of the build's greedy "
                                     "golden continuations the endpoint must reproduce before diverging (the same "
                                     "checkpoint under other kernels diverges late, another one early).")
    min_subset_agreement: float = Field(default=0.5, ge=0, le=1, description="Share of the evaluation subset's "
                                        "documents the endpoint must answer with the build's letter.")
    mcnemar_alpha: float = Field(default=0.05, gt=0, lt=1, description="The subset's answers fail when the endpoint "
                                 "is right less often than the build, significant at this level (exact McNemar).")
    load_concurrency: int = Field(default=4, ge=1, le=1024, description="Concurrent requests of the load test.")
    load_requests: int = Field(default=32, ge=0, le=100000, description="Requests of the load test (0: none).")
    load_max_tokens: int = Field(default=32, ge=1, le=8192, description="Output tokens per load-test request.")
    max_ttft_p99_s: float = Field(default=5.0, gt=0, description="Fail when the load test's p99 time to first "
                                  "token exceeds this. Judged on latency at the test's own concurrency: the build's "
                                  "trtllm-bench tokens/s is a saturation figure (unbounded concurrency), no yardstick "
                                  "for a concurrency-4 test (on an H100, vLLM: 1,155 tok/s at 4 against 9,431 at 256).")


class AlertPolicy(BaseModel):
    """Thresholds of the alerting rules rendered with each release (enginewright.serving.monitoring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_p99_s: float = Field(default=2.0, gt=0, description="Alert when p99 time to first token exceeds this.")
    queue_depth: int = Field(default=32, ge=1, description="Alert when more requests than this are waiting.")
    error_rate: float = Field(default=0.01, gt=0, lt=1, description="Alert when this share of requests fails.")
    length_share: float = Field(default=0.2, gt=0, lt=1, description="Alert when this share of replies is cut off "
                                "at max_tokens (finished_reason length).")
    tpot_p99_s: float = Field(default=0.25, gt=0, description="Alert when p99 time per output token exceeds this "
                              "(replies streaming slower than 1/this tokens/s each, whatever the traffic).")
    window: str = Field(default="5m", pattern=r"^[0-9]+[smh]$", description="Rate window of the rules.")


class DeployTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                      description="Target id: lowercase letters, digits and '-'; names the rendered config's folder.")
    gpu: str = Field(description="The serving GPU, in words (shown on the version).")
    compute_capability: str = Field(
        description="The serving GPU's CUDA compute capability, 'major.minor': 8.0 A100, 8.9 L40S, 9.0 H100/H200, "
        "10.0 B200.")
    runtime: RuntimeName = Field(
        default="tensorrt_llm", description="What serves the bundle: tensorrt_llm (trtllm-serve, Triton) or vllm "
        "(`vllm serve`); which formats each serves where is enginewright.serving.serving_runtimes.")
    runtime_version: str | None = Field(
        default=None, description="The serving image's runtime version; unset: the version enginewright pins "
        "(TensorRT-LLM 1.3.0rc20, vLLM 0.26.0).")
    tensorrt_version: str | None = Field(
        default=None, description="TensorRT version of the serving image; a legacy engine is served only when it "
        "equals the version the engine was built with.")
    serve_legacy_engine: bool = Field(
        default=False, description="Serve the bundle's legacy TensorRT engine (TensorRT-LLM ≤ 1.3.0rc20 images) instead of "
        "its checkpoint; the engine must have been built on this GPU architecture and TensorRT version.")
    gpu_count: int = Field(default=1, ge=1, le=64, description="GPUs on one serving node: a model instance needs "
                           "tensor_parallel_size × pipeline_parallel_size of them.")
    tensor_parallel_size: int | None = Field(
        default=None, ge=1, description="GPUs per model instance; unset keeps the bundle's llm_api.yaml value.")
    host: str = Field(default="0.0.0.0", description="Address trtllm-serve listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port trtllm-serve (and Triton's HTTP) listen on.")
    endpoint: str | None = Field(
        default=None, pattern=r"^https?://[^/\s]+$", description="Where the serving host answers the OpenAI API "
        "(http://host:port) once it runs the switched release; every deploy is then verified there and rolled back "
        "when it fails. Unset: deploys are not verified.")
    verify: VerifyPolicy = Field(default_factory=VerifyPolicy, description="How a switched release is verified.")
    alerts: AlertPolicy = Field(default_factory=AlertPolicy, description="Thresholds of the rendered alert rules.")
    triton_llmapi_template: Path | None = Field(
        default=None, description="Folder `triton_backend/all_models/llmapi/tensorrt_llm` of the TensorRT-LLM "
        "release the serving image runs; its config.pbtxt and 1/*.py are copied into the rendered Triton "
        "repository. Unset: the repository holds model.yaml only and its README says what to copy.")

    @field_validator("compute_capability")
    @classmethod
    def _capability(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{value!r} is not 'major.minor' (for example '9.0')")
        return value

    @field_validator("tensor_parallel_size")
    @classmethod
    def _fits_the_node(cls, value: int | None, info: ValidationInfo) -> int | None:
        gpus = info.data.get("gpu_count")
        if value is not None and gpus is not None and value > gpus:
            raise ValueError(f"one instance on {value} GPUs needs gpu_count {value} or more; the target has {gpus}")
        return value

    @field_validator("runtime_version")
    @classmethod
    def _known_version(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "runtime" in info.data:
            parse_version(info.data["runtime"], value)  # ValueError: a version the serving table does not know
        return value

    @model_validator(mode="after")
    def _runtime(self) -> DeployTarget:
        if self.serve_legacy_engine and self.runtime != "tensorrt_llm":
            raise ValueError("serve_legacy_engine needs runtime tensorrt_llm (a TensorRT engine runs nowhere else)")
        return self

    @property
    def served_runtime_version(self) -> str:
        return self.runtime_version or RUNTIMES[self.runtime].default_version

    @property
    def metrics_address(self) -> str:
        """host:port Prometheus scrapes: the endpoint's, else where the rendered serving command listens."""
        if self.endpoint is not None:
            return self.endpoint.split("://", 1)[1]
        return f"{'localhost' if self.host == '0.0.0.0' else self.host}:{self.port}"

    @property
    def capability(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


def load_target(path: Path) -> DeployTarget:
    """Read and validate a target file; one clear InputError naming the file and the bad field otherwise."""
    raw = read_yaml_mapping(path, "deploy target", "pass a target YAML such as specs/targets/h100.yaml", "fields")
    try:
        return DeployTarget.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, f"deploy target {str(path)!r}")) from None
