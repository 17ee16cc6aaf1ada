"""Stand-in for `tensorrt_llm` (see ../README.md): LLM, SamplingParams, BuildConfig, recording their calls."""

from dataclasses import dataclass, field

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
    def __init__(self, **kwargs):
        CALLS.append(("LLM", kwargs))

    def generate(self, prompts, sampling_params):
        CALLS.append(("generate", (list(prompts), sampling_params)))
        return [_RequestOutput(p, [_Completion(list(range(sampling_params.max_tokens)), f"{p} …")]) for p in prompts]

    def shutdown(self):
        CALLS.append(("shutdown", None))
