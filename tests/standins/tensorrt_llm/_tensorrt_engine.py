"""Stand-in for the TensorRT-backend LLM of TensorRT-LLM <= 1.2: `save` writes a fake engine directory."""

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
