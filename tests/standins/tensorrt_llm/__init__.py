"""Stand-in for `tensorrt_llm` (see ../README.md): LLM, SamplingParams, BuildConfig, recording their calls.

`LLM(**kwargs)` accepts what NVIDIA/TensorRT-LLM's LLM-API arguments accept as far as enginewright passes them
(enginewright.serving.runtimes.tensorrt_llm.LlmApiOptions, read from tensorrt_llm/llmapi/llm_args.py @
0004396720054fd8e205cbf616f21f0b57c6b412), plus `model`; an unknown or mistyped key raises as pydantic's
`extra="forbid"` does there. `SamplingParams` is a kw-only dataclass of the fields enginewright passes, with the real
defaults (tensorrt_llm/sampling_params.py @ a98a9061d72f6fd39f5d055ebdd2c6878a100e2c): an unknown keyword is a
TypeError there too. `generate` takes a string, a token list or a TokensPrompt dict per prompt
(tensorrt_llm/inputs/data.py @ 2a9abd9536aa62ad3e4b9314be9286b1b1be523b).

Prompt log-probabilities have the real shape (executor/result.py: `outputs[0].prompt_logprobs` is a list of
{token id: Logprob(logprob, rank)}, one entry per prompt position, entry i the distribution that predicted token
i + 1). Their numbers come from a PyTorch model loaded with transformers in float32: from `model`, or, where
`TENSORRT_LLM_STANDIN_WEIGHTS` names a plain Hugging Face checkpoint, from that one (the stand-in has no
quantized kernels, so a test that sends it a quantized bundle says which unquantized model computes instead). `PROMPT_TOKEN_IN_ENTRY` chooses the line emulated: True (≥ 1.3.0rc11) puts token i + 1 in
entry i; False keeps only the top-k ids, as older lines do.
"""

import os
from dataclasses import dataclass, field
from typing import Any

from enginewright.serving.runtimes.tensorrt_llm import SAMPLING_PARAMS_FIELDS, LlmApiOptions

CALLS: list[tuple[str, object]] = []
PROMPT_TOKEN_IN_ENTRY = True


@dataclass(kw_only=True)
class SamplingParams:
    max_tokens: int = SAMPLING_PARAMS_FIELDS["max_tokens"]
    temperature: float | None = None
    prompt_logprobs: int | None = None
    logprobs: int | None = None
    stop: str | list[str] | None = None
    add_special_tokens: bool = True
    detokenize: bool = True


@dataclass(kw_only=True)
class BuildConfig:  # the fields of enginewright.serving.runtimes.tensorrt_llm.BUILD_CONFIG_FIELDS; another keyword is a TypeError
    max_batch_size: int = 2048
    max_num_tokens: int = 8192
    max_seq_len: int | None = None
    max_beam_width: int = 1


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None


@dataclass
class _Completion:
    token_ids: list[int]
    text: str
    prompt_logprobs: list[dict[int, Logprob]] | None = None


@dataclass
class _RequestOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[_Completion] = field(default_factory=list)


def _prompt_tokens(prompt: Any) -> tuple[str | None, list[int]]:
    if isinstance(prompt, str):
        return prompt, []
    if isinstance(prompt, list):
        assert isinstance(prompt[0], int)
        return None, list(prompt)
    if isinstance(prompt, dict) and prompt.get("prompt_token_ids") is not None:
        return None, list(prompt["prompt_token_ids"])
    raise TypeError(f"Invalid type of inputs for llm.generate: {type(prompt)}")


class LLM:
    def __init__(self, model, **kwargs):
        if not isinstance(model, str) or not model:
            raise ValueError("model should be provided.")  # llm_args.py _ModelWrapper
        LlmApiOptions.model_validate(kwargs)  # pydantic ValidationError on any key the real LlmArgs would refuse
        CALLS.append(("LLM", {"model": model, **kwargs}))
        self._model_dir, self._model = model, None

    def _logprobs(self, tokens: list[int], k: int) -> tuple[list[dict[int, Logprob]], int]:
        import torch

        if self._model is None:
            from transformers import AutoModelForCausalLM

            weights = os.environ.get("TENSORRT_LLM_STANDIN_WEIGHTS", self._model_dir)
            self._model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
        with torch.no_grad():
            logprobs = torch.log_softmax(self._model(torch.tensor([tokens])).logits[0].float(), dim=-1)
        first_generated = int(logprobs[-1].argmax())
        entries = []
        for i in range(len(tokens)):
            values, ids = torch.topk(logprobs[i], k)
            entry = {int(t): Logprob(float(v), r + 1) for r, (v, t) in enumerate(zip(values, ids, strict=True))}
            following = tokens[i + 1] if i + 1 < len(tokens) else first_generated
            if PROMPT_TOKEN_IN_ENTRY and following not in entry:
                value = logprobs[i, following]
                entry[following] = Logprob(float(value), int((logprobs[i] > value).sum()) + 1)
            entries.append(entry)
        return entries, first_generated

    def generate(self, prompts, sampling_params):
        if not isinstance(sampling_params, SamplingParams):
            raise TypeError("sampling_params must be a SamplingParams")
        prompts = list(prompts) if isinstance(prompts, list) and not isinstance(prompts[0], int) else [prompts]
        CALLS.append(("generate", (prompts, sampling_params)))
        outputs = []
        for prompt in prompts:
            text, tokens = _prompt_tokens(prompt)
            if sampling_params.prompt_logprobs and tokens:
                entries, first = self._logprobs(tokens, sampling_params.prompt_logprobs)
                completion = _Completion([first][:sampling_params.max_tokens], "", entries)
            else:
                completion = _Completion(list(range(sampling_params.max_tokens)), f"{text} …")
            outputs.append(_RequestOutput(text, tokens, [completion]))
        return outputs

    def shutdown(self):
        CALLS.append(("shutdown", None))
