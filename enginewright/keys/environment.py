"""What the build ran with: tool versions for the build key, and a fuller fingerprint for the manifest."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

# Tools whose versions change what a build produces (part of the build key).
KEY_TOOLS = ("nvidia-modelopt", "transformers", "torch", "tensorrt-llm")
# Tools recorded for the reader of a manifest, but not part of the bundle identity.
RECORDED_TOOLS = ("lm-eval", "mlflow", "prefect", "datasets", "safetensors")


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def gpu_description() -> dict[str, str]:
    import torch  # here: the preflight imports this module for package_version and never needs torch

    if not torch.cuda.is_available():
        return {"cuda": "none", "gpu": "none", "gpu_sm": "none"}
    major, minor = torch.cuda.get_device_capability(0)
    return {"cuda": str(torch.version.cuda), "gpu": torch.cuda.get_device_name(0), "gpu_sm": f"{major}{minor}"}


def key_tool_versions(engine_target: bool = False) -> dict[str, str]:
    """Versions that shape the bundle; with `engine_target` (a legacy TensorRT engine is built) also the GPU SM
    and the TensorRT version, since an engine runs only where both match."""
    versions = {name: package_version(name) for name in KEY_TOOLS}
    versions["cuda"] = gpu_description()["cuda"]
    if engine_target:
        versions["gpu_sm"] = gpu_description()["gpu_sm"]
        versions["tensorrt"] = package_version("tensorrt")
    return versions


def environment_fingerprint() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{name: package_version(name) for name in KEY_TOOLS + RECORDED_TOOLS},
        **gpu_description(),
    }
