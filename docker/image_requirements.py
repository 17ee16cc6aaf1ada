"""Print pyproject.toml's dependencies for a GPU worker image: every requirement except torch, whose CUDA build the
TensorRT-LLM image already has (pyproject pins the CPU wheel of the dev/CI machines). One list, read, not copied."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

IMAGE_OWNS = {"torch"}  # shipped by NVIDIA's TensorRT-LLM image, built against its CUDA


def requirements(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in dependencies if re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() not in IMAGE_OWNS]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(requirements(root / "pyproject.toml")))
