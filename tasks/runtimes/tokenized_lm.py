"""What the runtimes that compute elsewhere (TensorRT-LLM, vLLM) share in their lm-eval model: tokenization by
lm-eval's own helpers, as HFLM uses them, so a runtime's requests match the baseline's token for token, and the
loglikelihood loop (left truncation, chunks, progress bar, lm-eval's cache hook). A runtime adds `score_spans` —
how it scores one chunk — and generation."""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix
from tqdm import tqdm

# Requests handed to the runtime at once: it batches inside the call; the chunk only paces the progress bar.
REQUESTS_PER_CALL = 1024


class TokenizedLM(TemplateLM):
    """TemplateLM with a Hugging Face tokenizer (`self.tokenizer`) and a context limit (`self._max_length`)."""

    tokenizer: Any
    _max_length: int
    label: str  # the runtime's name on the progress bar

    def score_spans(self, spans: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(log-likelihood of tokens[ctxlen:], whether it was the greedy answer) for each (tokens, ctxlen)."""
        raise NotImplementedError

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = []
        bar = tqdm(total=len(requests), desc=f"{self.label} loglikelihood", disable=disable_tqdm)
        for start in range(0, len(requests), REQUESTS_PER_CALL):
            chunk = requests[start:start + REQUESTS_PER_CALL]
            spans = []
            for _, context_enc, continuation_enc in chunk:
                tokens = (context_enc + continuation_enc)[-self.max_length:]  # left-truncated, as HFLM does
                spans.append((tokens, len(tokens) - len(continuation_enc)))
            for (key, _, _), answer in zip(chunk, self.score_spans(spans), strict=True):
                results.append(answer)
                self.cache_hook.add_partial("loglikelihood", key, answer)
            bar.update(len(chunk))
        bar.close()
        return results

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:  # as HFLM: BOS where the tokenizer has one, else EOS
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)
