"""The build's golden outputs (enginewright.serving.golden says what and why): the evaluated candidate's greedy
continuations of the fixed golden prompts and its lettered answers to the fixed evaluation subset.

The candidate is the one the gate evaluated, as the evaluate step holds it (tasks/evaluate.py records them at its
end, no load of its own): the calibrated model with the exported checkpoint's own weight codes
(tasks/runtimes/simulated.py), or — where a real runtime computed the gate's candidate (vLLM) — that runtime: the
simulated candidate's greedy text is not what vLLM's FP8 kernels produce (an H100 release of SmolLM2 FP8 reproduced 1
of 16 continuations of it, docs/results.md), and a release must be compared with what its own runtime computes. Its
subset answers come from the candidate's lm-eval model (HFLM, or the runtime's) `generate_until` with the very
requests the verify step later sends through lm-eval's `local-completions` (tasks/verify.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginewright.serving.golden import (
    ANSWER_MAX_TOKENS,
    ANSWER_STOP,
    GOLDEN_MAX_NEW_TOKENS,
    GOLDEN_PROMPTS,
    Continuation,
    Golden,
    SubsetRequest,
    answers_of,
    prompts_digest,
    subset_documents,
    subset_requests,
    subset_task,
    text_sha256,
)
from tasks.smoke import greedy_continuations


def generate_requests(lm: Any, requests: list[SubsetRequest]) -> list[str]:
    """Greedy answers through an lm-eval model's `generate_until` (HFLM here, local-completions when verifying)."""
    from lm_eval.api.instance import Instance

    gen_kwargs = {"until": list(ANSWER_STOP), "max_gen_toks": ANSWER_MAX_TOKENS, "do_sample": False,
                  "temperature": 0}
    instances = [Instance(request_type="generate_until", doc={}, arguments=(r.prompt, dict(gen_kwargs)), idx=0)
                 for r in requests]
    return list(lm.generate_until(instances, disable_tqdm=True))


def record_golden(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, data_dir: Path,
                  tasks: list[str]) -> Golden:
    """The golden records of a loaded model (plain function: tests record them for any checkpoint)."""
    from lm_eval.models.huggingface import HFLM

    continuations = greedy_continuations(model, tokenizer, prompts, max_new_tokens)
    # one at a time, as the endpoint is asked
    return assemble_golden(prompts, max_new_tokens, continuations,
                           lambda: HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1), data_dir, tasks)


def record_golden_on_runtime(lm: Any, prompts: list[str], max_new_tokens: int, data_dir: Path,
                             tasks: list[str]) -> Golden:
    """The golden records as a real runtime computes them (an lm-eval model with `greedy`, e.g. the vLLM runtime's):
    what a release of that runtime must reproduce, kernel for kernel."""
    return assemble_golden(prompts, max_new_tokens, lm.greedy(prompts, max_new_tokens), lambda: lm, data_dir, tasks)


def assemble_golden(prompts: list[str], max_new_tokens: int, continuations: list[tuple[list[int], str]],
                    make_lm: Any, data_dir: Path, tasks: list[str]) -> Golden:
    records = [Continuation(p, text_sha256(p), ids, text) for p, (ids, text) in zip(prompts, continuations, strict=True)]
    task_name = subset_task(tasks)
    answers = []
    if task_name is not None:
        requests = subset_requests(task_name, subset_documents(data_dir, task_name))
        answers = answers_of(requests, generate_requests(make_lm(), requests))
    return Golden(prompts_digest(prompts), max_new_tokens, records, task_name, answers)


def golden_of(lm: Any, tokenizer: Any, data_dir: Path, tasks: list[str]) -> Golden:
    """The golden records (GOLDEN_PROMPTS, GOLDEN_MAX_NEW_TOKENS) of an lm-eval model as the evaluation holds it: a
    runtime's (with its own `greedy`) or HFLM's torch model."""
    if hasattr(lm, "greedy"):
        return record_golden_on_runtime(lm, list(GOLDEN_PROMPTS), GOLDEN_MAX_NEW_TOKENS, data_dir, tasks)
    return record_golden(lm.model, tokenizer, list(GOLDEN_PROMPTS), GOLDEN_MAX_NEW_TOKENS, data_dir, tasks)
