"""Stand-in for `tensorrt_llm` (see ../README.md): LLM, SamplingParams, BuildConfig, recording their calls.

`LLM(**kwargs)` accepts what NVIDIA/TensorRT-LLM's LLM-API arguments accept as far as enginewright passes them
(enginewright.trtllm_contract.LlmApiOptions, read from tensorrt_llm/llmapi/llm_args.py @
0004396720054fd8e205cbf616f21f0b57c6b412), plus `model`; an unknown or mistyped key raises as pydantic's
`extra="forbid"` does there. SamplingParams: tensorrt_llm/sampling_params.py (max_tokens, temperature).
"""

from dataclasses import dataclass, field

from enginewright.trtllm_contract import LlmApiOptions

CALLS: list[tuple[str, object]] = []


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0


@dataclass
class BuildConfig:
    max_batch_size: int = 8
    max_num_tokens: int = 1024


@dataclass
class _Completion:
    token_ids: list[int]
    text: str


@dataclass
class _RequestOutput:
    prompt: str
    outputs: list[_Completion] = field(default_factory=list)


class LLM:
    def __init__(self, model, **kwargs):
        if not isinstance(model, str) or not model:
            raise ValueError("model should be provided.")  # llm_args.py _ModelWrapper
        LlmApiOptions.model_validate(kwargs)  # pydantic ValidationError on any key the real LlmArgs would refuse
        CALLS.append(("LLM", {"model": model, **kwargs}))

    def generate(self, prompts, sampling_params):
        CALLS.append(("generate", (list(prompts), sampling_params)))
        return [_RequestOutput(p, [_Completion(list(range(sampling_params.max_tokens)), f"{p} …")]) for p in prompts]

    def shutdown(self):
        CALLS.append(("shutdown", None))
