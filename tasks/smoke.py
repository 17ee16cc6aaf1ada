"""A cheap check before the long evaluation: greedy continuations of a few fixed prompts.

A candidate whose continuations are empty or repetitive where the baseline's are not is broken (a bad
calibration set, a wrong scale); it fails at once instead of after the full evaluation. Where the baseline
itself is degenerate (a tiny or random model) the check cannot tell anything and says so.

The build runs it inside the evaluate step, on the two models that step loads anyway, before the first look
(tasks/evaluate.py): no load of its own. `smoke_check` loads its own (a benchmark's way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from enginewright.config.schemas import SmokeResult
from enginewright.errors import GateFailed
from enginewright.quant.calibrate import QuantizedState
from enginewright.quant.models import load_model, load_tokenizer
from tasks.runtimes.simulated import load_candidate

MIN_DISTINCT_BIGRAM_RATIO = 0.4


def is_degenerate(token_ids: list[int], text: str) -> bool:
    """Empty text, or so few distinct bigrams that the continuation is a loop ("the the the", "A B A B")."""
    if not text.strip() or len(token_ids) < 2:
        return True
    bigrams = list(zip(token_ids, token_ids[1:], strict=False))
    return len(set(bigrams)) / len(bigrams) < MIN_DISTINCT_BIGRAM_RATIO


def greedy_continuations(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[tuple[list[int], str]]:
    device = next(model.parameters()).device
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt").to(device)
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            new_ids = generated[0, inputs["input_ids"].shape[1]:].tolist()
            outputs.append((new_ids, tokenizer.decode(new_ids, skip_special_tokens=True)))
    return outputs


def smoke_verdict(prompts: list[str], baseline: list[tuple[list[int], str]], candidate: list[tuple[list[int], str]]) -> SmokeResult:
    base_bad = [is_degenerate(ids, text) for ids, text in baseline]
    cand_bad = [is_degenerate(ids, text) for ids, text in candidate]
    informative = [i for i, bad in enumerate(base_bad) if not bad]
    if not informative:
        verdict, reason = "not-informative", "the baseline's own continuations are empty or repetitive"
    else:
        broken = [i for i in informative if cand_bad[i]]
        verdict = "fail" if len(broken) * 2 > len(informative) else "pass"
        reason = (f"candidate continuation empty or repetitive on {len(broken)} of {len(informative)} prompts "
                  "where the baseline's is not")
        if broken:
            reason += f", e.g. {prompts[broken[0]]!r} → {candidate[broken[0]][1][:60]!r}"
    return SmokeResult(verdict=verdict, prompts=prompts, baseline=[t for _, t in baseline],
                       candidate=[t for _, t in candidate], degenerate=cand_bad, reason=reason)


def greedy_of(lm: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[tuple[list[int], str]]:
    """Greedy continuations of an lm-eval model as the evaluation holds it: a runtime's own (vLLM's `greedy`: its
    kernels, its tokens) or, for HFLM, its torch model's."""
    if hasattr(lm, "greedy"):
        return lm.greedy(prompts, max_new_tokens)
    return greedy_continuations(lm.model, tokenizer, prompts, max_new_tokens)


def smoke_of(baseline_lm: Any, candidate_lm: Any, tokenizer: Any, prompts: list[str],
             max_new_tokens: int) -> SmokeResult:
    """The check on two loaded lm-eval models (the evaluate step's); raises GateFailed when the candidate fails."""
    result = smoke_verdict(prompts, greedy_of(baseline_lm, tokenizer, prompts, max_new_tokens),
                           greedy_of(candidate_lm, tokenizer, prompts, max_new_tokens))
    if result["verdict"] == "fail":
        raise GateFailed(f"smoke check failed before evaluation: {result['reason']}")
    return result


def smoke_check(checkpoint: Path, state: QuantizedState, dtype: str, prompts: list[str], max_new_tokens: int) -> SmokeResult:
    """The check with models of its own: the baseline, and the candidate with ModelOpt's folded weights."""
    tokenizer = load_tokenizer(checkpoint)
    baseline = greedy_continuations(load_model(checkpoint, dtype), tokenizer, prompts, max_new_tokens)
    candidate_model = load_candidate(checkpoint, state, dtype, fold=True)
    candidate = greedy_continuations(candidate_model, tokenizer, prompts, max_new_tokens)
    return smoke_verdict(prompts, baseline, candidate)
