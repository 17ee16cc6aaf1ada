"""Stand-in for the TensorRT-backend LLM of TensorRT-LLM <= 1.3.0rc20: `save` writes a fake engine directory.

Real one: `from tensorrt_llm._tensorrt_engine import LLM`, as NVIDIA/TensorRT-LLM imports it in
tensorrt_llm/bench/benchmark/throughput.py @ 000a01de66f0eab4ab05640711f0253f50f5209c and
tensorrt_llm/commands/serve.py @ 00209af149e7774406881a37283dce303571eb11 (backend "tensorrt"). Its
`LLM(model=..., build_config=BuildConfig(...))` / `save(dir)` / `shutdown()` calls are in the contract
(enginewright/serving/runtimes/tensorrt_llm.py, from tensorrt_llm/_tensorrt_engine/llm.py @ e3cc74ce); the lane is still
unverified: nothing here builds an engine.
"""

from pathlib import Path

from tensorrt_llm import CALLS


class LLM:
    def __init__(self, model, build_config=None, **kwargs):
        from tensorrt_llm import BuildConfig

        if build_config is not None and not isinstance(build_config, BuildConfig):
            raise TypeError("build_config must be a BuildConfig")
        CALLS.append(("EngineLLM", {"model": model, "build_config": build_config, **kwargs}))
        self._built = True

    def save(self, engine_dir):
        Path(engine_dir).mkdir(parents=True)
        (Path(engine_dir) / "rank0.engine").write_bytes(b"stand-in engine")
        (Path(engine_dir) / "config.json").write_text("{}")

    def shutdown(self):
        pass
