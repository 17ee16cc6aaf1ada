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

from enginewright.errors import InputError, describe_validation_error
from enginewright.serving_runtimes import DEFAULT_VERSIONS, RuntimeName, parse_version
from enginewright.spec import read_yaml_mapping


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
        "(`vllm serve`); which formats each serves where is enginewright.serving_runtimes.")
    runtime_version: str | None = Field(
        default=None, description="The serving image's runtime version; unset: the version enginewright pins "
        "(TensorRT-LLM 1.3.0rc20, vLLM 0.33.0).")
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
        return self.runtime_version or DEFAULT_VERSIONS[self.runtime]

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
