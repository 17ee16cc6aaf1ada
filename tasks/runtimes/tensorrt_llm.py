"""The TensorRT-LLM runtime: the bundle evaluated by TensorRT-LLM itself, through our own lm-eval model class.

`BundleLM` loads the bundle's checkpoint with the LLM API and the bundle's `llm_api.yaml`, merged as trtllm-serve
merges it (tasks.trtllm_build.llm_api_kwargs), so what is evaluated is what serves. A continuation's log-likelihood
comes from the prompt log-probabilities TensorRT-LLM returns, which are aligned to the *next* token: entry i is the
distribution that predicted token i + 1 (enginewright.serving.runtimes.tensorrt_llm). lm-eval's stock `trtllm` class reads entry i
for token i and builds its own `LLM(...)` without the bundle's options; this class is what replaces it.

It needs TensorRT-LLM ≥ 1.3.0rc11, where every prompt token is in its entry; on older lines `runtimes.choose` never
picks it. A token missing from its entry raises RuntimeLaneFailed (the evaluation falls back to the simulated
candidate and says why) rather than dropping a term, which would inflate the accuracy.

Tokenization, the empty-context prefix and the context limit are lm-eval's own helpers, as HFLM uses them, so the
requests match the baseline's token for token. Unverified against a real TensorRT-LLM: no machine available to this
project runs it. tests/test_runtime_tensorrt_llm.py drives this class through the contract stand-in
(tests/standins/tensorrt_llm), whose log-probabilities come from a PyTorch model, and checks it against HFLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length
from tqdm import tqdm

from enginewright.errors import RuntimeLaneFailed
from enginewright.quant.models import load_tokenizer
from enginewright.serving.runtimes.tensorrt_llm import TOKENS_PROMPT_KEY, check_sampling_params
from tasks.runtimes.tokenized_lm import TokenizedLM


def continuation_logprob(prompt_logprobs: list[dict[int, Any]], tokens: list[int], ctxlen: int) -> tuple[float, bool]:
    """Sum of log p(tokens[i] | tokens[:i]) over the continuation tokens[ctxlen:], and whether each was the argmax.

    Entry i - 1 of `prompt_logprobs` holds token i (next-token alignment); token 0 is never scored."""
    if len(prompt_logprobs) < len(tokens) - 1:
        raise RuntimeLaneFailed(f"TensorRT-LLM returned {len(prompt_logprobs)} prompt log-probabilities for "
                                f"{len(tokens)} tokens: it scored another prompt than was sent")
    total, greedy = 0.0, True
    for i in range(max(ctxlen, 1), len(tokens)):
        entry = prompt_logprobs[i - 1].get(tokens[i])
        if entry is None:
            raise RuntimeLaneFailed(f"token {tokens[i]} at position {i} is missing from TensorRT-LLM's prompt "
                                    f"log-probabilities (entry {i - 1}); this TensorRT-LLM returns only the top-k")
        total += float(entry.logprob)
        greedy = greedy and entry.rank == 1
    return total, greedy


@register_model("enginewright-tensorrt-llm")
class BundleLM(TokenizedLM):
    """lm-eval model over an enginewright bundle served by TensorRT-LLM's LLM API (PyTorch backend)."""

    label = "TensorRT-LLM"

    def __init__(self, bundle_dir: str, tokenizer: Any = None, batch_size: int = 64, max_gen_toks: int = 256) -> None:
        super().__init__()
        from tensorrt_llm import LLM

        from tasks.trtllm_build import llm_api_kwargs

        bundle = Path(bundle_dir)
        checkpoint = bundle / "checkpoint"
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(checkpoint)
        self.batch_size = batch_size
        self._max_gen_toks = max_gen_toks
        options = llm_api_kwargs(checkpoint, bundle / "llm_api.yaml")
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=False)
        self._max_length = options.get("max_seq_len") or resolve_max_length(config, self.tokenizer)
        try:
            self._llm = LLM(**options)
        except Exception as exc:  # any load failure: the evaluation falls back and records this line
            raise RuntimeLaneFailed(f"TensorRT-LLM could not load the bundle: {type(exc).__name__}: {exc}") from exc


    def _sampling_params(self, **kwargs: Any) -> Any:
        from tensorrt_llm import SamplingParams

        check_sampling_params(kwargs)
        return SamplingParams(**kwargs)

    def score_spans(self, spans: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        # One generated token, greedy; prompt_logprobs=1: the top-1 entry plus (≥ 1.3.0rc11) each prompt token.
        params = self._sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        try:
            outputs = self._llm.generate([{TOKENS_PROMPT_KEY: tokens} for tokens, _ in spans], params)
        except Exception as exc:  # a runtime error must not fail the build: the evaluation falls back
            raise RuntimeLaneFailed(f"TensorRT-LLM generate failed: {type(exc).__name__}: {exc}") from exc
        return [continuation_logprob(output.outputs[0].prompt_logprobs, tokens, ctxlen)
                for output, (tokens, ctxlen) in zip(outputs, spans, strict=True)]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        texts = []
        for request in tqdm(requests, desc="TensorRT-LLM generate", disable=disable_tqdm):
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or [self.tokenizer.decode(self.eot_token_id)]
            params = self._sampling_params(max_tokens=int(gen_kwargs.get("max_gen_toks", self._max_gen_toks)),
                                           temperature=0.0, stop=list(until))
            prompt = self.tok_encode(context)[-self.max_length:]
            texts.append(self._llm.generate([{TOKENS_PROMPT_KEY: prompt}], params)[0].outputs[0].text)
        return texts

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise RuntimeLaneFailed("BundleLM scores multiple-choice loglikelihood tasks only (enginewright.config.eval_tasks); "
                                "rolling loglikelihood (perplexity tasks) is not implemented")

    def shutdown(self) -> None:
        self._llm.shutdown()


def make_lm(bundle_dir: Path, tokenizer: Any, batch_size: int) -> BundleLM:
    return BundleLM(str(bundle_dir), tokenizer=tokenizer, batch_size=batch_size)
