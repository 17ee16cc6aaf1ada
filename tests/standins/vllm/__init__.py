"""Stand-in for the `vllm` package, as far as tasks/runtimes/vllm_scorer.py uses it (vLLM needs a GPU; CI has none).

What it accepts and returns was read in vllm-project/vllm at tag v0.26.0 (commit ffd46bfab, the short id the
released wheel vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64 records in vllm/_version.py; the version the GPU worker
installs), each path in that repository:
- vllm-project/vllm vllm/entrypoints/llm.py @ v0.26.0: `LLM.__init__(model, ..., trust_remote_code=False,
  quantization=None, seed=0, gpu_memory_utilization=0.92, **kwargs)` (max_model_len goes to EngineArgs through
  kwargs); `LLM.generate(prompts, sampling_params, use_tqdm=...)` takes one SamplingParams or one per prompt and
  returns one RequestOutput per prompt;
- vllm-project/vllm vllm/sampling_params.py @ v0.26.0 `SamplingParams`: temperature, max_tokens, stop,
  prompt_logprobs (the fields the scorer sets; others refused here);
- vllm-project/vllm vllm/inputs/__init__.py @ v0.26.0 `TokensPrompt`: a dict with `prompt_token_ids`;
- vllm-project/vllm vllm/logprobs.py @ v0.26.0 `Logprob(logprob, rank, decoded_token)` and
  `create_prompt_logprobs` (entry 0 is None, entry i holds prompt token i: its own logprob and rank plus the top-k) —
  the alignment the scorer relies on, and the opposite of TensorRT-LLM's (tests/standins/tensorrt_llm);
- vllm-project/vllm vllm/model_executor/layers/quantization/__init__.py @ v0.26.0: the `modelopt*` method names.
The numbers come from the checkpoint computed by PyTorch on the CPU (float32), not from vLLM's kernels; the
real kernels' agreement was measured on the H100 (docs/results.md, "vLLM on an H100").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__version__ = "0.26.0"

LLM_KWARGS = {"model", "quantization", "max_model_len", "seed", "gpu_memory_utilization", "trust_remote_code"}
SAMPLING_FIELDS = {"temperature", "max_tokens", "stop", "prompt_logprobs"}
QUANTIZATIONS = {None, "modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed"}


def TokensPrompt(prompt_token_ids: list[int]) -> dict[str, list[int]]:  # noqa: N802 (a TypedDict there)
    return {"prompt_token_ids": list(prompt_token_ids)}


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"SamplingParams.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        self.temperature = kwargs.get("temperature", 1.0)
        self.max_tokens = kwargs.get("max_tokens", 16)
        self.stop = kwargs.get("stop")
        self.prompt_logprobs = kwargs.get("prompt_logprobs")


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int] = field(default_factory=list)


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]


class LLM:
    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - LLM_KWARGS
        if unknown:
            raise TypeError(f"stand-in LLM: no engine argument {sorted(unknown)}")
        if kwargs.get("quantization") not in QUANTIZATIONS:
            raise ValueError(f"Unknown quantization method: {kwargs['quantization']}")
        if kwargs.get("trust_remote_code"):
            raise ValueError("the stand-in never runs remote code")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()

    def generate(self, prompts: list[dict[str, list[int]]], sampling_params: Any, use_tqdm: bool = True
                 ) -> list[RequestOutput]:
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params, strict=True)]

    def _one(self, tokens: list[int], params: SamplingParams) -> RequestOutput:
        import torch

        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(torch.tensor([tokens])).logits[0].float(), -1)
        entries: list[dict[int, Logprob] | None] | None = None
        if params.prompt_logprobs is not None:
            entries = [None]
            for i in range(1, len(tokens)):
                row = logprobs[i - 1]
                own = int(tokens[i])
                rank = int((row > row[own]).sum()) + 1
                entry = {own: Logprob(float(row[own]), rank)}
                top = int(row.argmax())
                entry.setdefault(top, Logprob(float(row[top]), 1))
                entries.append(entry)
        generated: list[int] = []
        context = list(tokens)
        stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        text = ""
        with torch.no_grad():
            for _ in range(params.max_tokens or 0):
                token = int(self.model(torch.tensor([context])).logits[0, -1].argmax())
                if token == self.tokenizer.eos_token_id:
                    break
                generated.append(token)
                context.append(token)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                cut = min((text.find(s) for s in stops if s in text), default=-1)
                if cut >= 0:
                    text = text[:cut]
                    break
        return RequestOutput(tokens, entries, [CompletionOutput(text, generated)])
