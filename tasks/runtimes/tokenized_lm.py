"""The tokenization half of a runtime's lm-eval model: lm-eval's own helpers, as HFLM uses them, so a runtime's
requests match the baseline's token for token. The runtimes that compute elsewhere (TensorRT-LLM, vLLM) subclass it
and add how they score and generate."""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix


class TokenizedLM(TemplateLM):
    """TemplateLM with a Hugging Face tokenizer (`self.tokenizer`) and a context limit (`self._max_length`)."""

    tokenizer: Any
    _max_length: int

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
