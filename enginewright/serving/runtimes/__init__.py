"""The serving runtimes, one module each (tensorrt_llm.py, vllm.py) behind one interface (base.ServingRuntime).

Adding a runtime is one module that builds a `ServingRuntime`, and its name here and in `RuntimeName`.
"""

from __future__ import annotations

from typing import Literal

from enginewright.serving.runtimes import tensorrt_llm, vllm
from enginewright.serving.runtimes.base import ServingRuntime

RuntimeName = Literal["tensorrt_llm", "vllm"]  # a deploy target's `runtime:` (pydantic checks it against this)
RUNTIMES: dict[str, ServingRuntime] = {r.name: r for r in (tensorrt_llm.RUNTIME, vllm.RUNTIME)}
