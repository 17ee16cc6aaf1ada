"""Few-shot examples that belong to the document: the same context whichever documents share its lm-eval call.

lm-eval 0.4.13 draws every document's examples from one random stream, seeded once per task
(EleutherAI/lm-evaluation-harness, lm_eval/api/samplers.py `ContextSampler.sample` → `self.rnd.sample`;
lm_eval/evaluator.py `task_obj.set_fewshot_seed`), in the order of the call's documents
(lm_eval/api/task.py `Task.build_all_requests`: one `fewshot_context` per document, in `doc_iterator` order).
A document evaluated in another batch (a look of another size, a stored baseline continued by a candidate) thus got
other examples, and the gate's prompt check refused the pair. The stream is re-seeded before each document from the
seed, the lm-eval task and the document's index, so its examples depend on the document alone.

The sampler is not told which document it samples for (`eval_doc` is passed only where the few-shot split is the
evaluated split), so it is made for one call with that call's documents in lm-eval's order, and counts its draws:
`check_drawn` refuses a call whose draws do not match its documents, rather than mislabel a context.
"""

from __future__ import annotations

from random import Random
from typing import Any

FEWSHOT_SEED = 0  # lm-eval's fewshot_random_seed, and the first part of each document's seed


def document_seeded_sampler(subtask: str, indices: list[int], seed: int) -> type[Any]:
    """A ContextSampler class for one lm-eval call of `subtask` over `indices` (sorted, as lm-eval iterates them)."""
    from lm_eval.api.samplers import ContextSampler

    class DocumentSeededSampler(ContextSampler):
        order = list(indices)
        drawn = 0

        def sample(self, n: int, eval_doc: Any = None, df: Any = None, **kwargs: Any):
            if n > 0:
                cls = type(self)
                if cls.drawn >= len(cls.order):
                    raise RuntimeError(f"{subtask}: lm-eval drew few-shot examples for more documents than the "
                                       f"{len(cls.order)} selected")
                self.rnd = Random(f"{seed}:{subtask}:{cls.order[cls.drawn]}")  # str seeds hash stably (sha512)
                cls.drawn += 1
            return super().sample(n, eval_doc=eval_doc, df=df, **kwargs)

    DocumentSeededSampler.__name__ = DocumentSeededSampler.__qualname__ = f"DocumentSeededSampler[{subtask}]"
    return DocumentSeededSampler


def check_drawn(samplers: dict[str, type[Any]]) -> None:
    """Every selected document drew its examples once: lm-eval built the contexts the way this module assumes.
    (Samplers are made only for calls with few-shot examples.)"""
    for subtask, sampler in samplers.items():
        if sampler.drawn != len(sampler.order):
            raise RuntimeError(f"{subtask}: lm-eval drew few-shot examples {sampler.drawn} times for "
                               f"{len(sampler.order)} documents; the per-document contexts cannot be trusted")
