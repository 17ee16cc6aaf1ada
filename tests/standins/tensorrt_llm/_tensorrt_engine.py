"""Stand-in for the TensorRT-backend LLM of TensorRT-LLM <= 1.3.0rc20: `save` writes a fake engine directory.

Real one: `from tensorrt_llm._tensorrt_engine import LLM`, as NVIDIA/TensorRT-LLM imports it in
tensorrt_llm/bench/benchmark/throughput.py @ 000a01de66f0eab4ab05640711f0253f50f5209c and
tensorrt_llm/commands/serve.py @ 00209af149e7774406881a37283dce303571eb11 (backend "tensorrt"). Its
`LLM(model=..., build_config=BuildConfig(...))` / `save(dir)` / `shutdown()` calls are not in the contract yet
(enginewright/trtllm_contract.py): this legacy lane is unverified.
"""

from pathlib import Path

from tensorrt_llm import CALLS


class LLM:
    def __init__(self, model, build_config):
        CALLS.append(("EngineLLM", {"model": model, "build_config": build_config}))

    def save(self, engine_dir):
        Path(engine_dir).mkdir(parents=True)
        (Path(engine_dir) / "rank0.engine").write_bytes(b"stand-in engine")
        (Path(engine_dir) / "config.json").write_text("{}")

    def shutdown(self):
        pass
