"""A look's progress bar: documents of the look done, which side, which tasks, rate and time left.

lm-eval hands a look's requests to the model in one call (every task's, sorted by length inside), so the bar
counts requests as the model answers them — through lm-eval's own cache hook, which HFLM and our runtimes call once
per answered request — and shows them as documents (a document is several requests: one per answer choice).
The model computes exactly as without the bar: the same call, the same batches. Silent where stderr is not a
terminal (enginewright.ops.console.progress_bar).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lm_eval.api.model import LM, CacheHook

from enginewright.ops.console import progress_bar


class _Counting(CacheHook):
    """lm-eval's cache hook that also moves the bar; it passes every answer on to the hook it replaced."""

    def __init__(self, passed_on: CacheHook, bar: Any, requests: int, documents: int) -> None:
        super().__init__(None)
        self.passed_on, self.bar = passed_on, bar
        self.per_document = requests / documents if documents else 1.0
        self.answered = 0

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.passed_on.add_partial(attr, req, res)
        self.answered += 1
        self.bar.update(int(self.answered / self.per_document) - self.bar.n)


class LookProgress(LM):
    """`inner` (an lm-eval model) with a progress bar over each call; `desc` names the look, side and tasks.
    Anything else is `inner`'s (lm-eval reads its rank, device, model info through here)."""

    def __init__(self, inner: Any, desc: str, make_bar: Callable[..., Any] = progress_bar) -> None:
        super().__init__()
        self.inner, self.desc, self.make_bar = inner, desc, make_bar

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def rank(self) -> int:
        return self.inner.rank

    @property
    def world_size(self) -> int:
        return self.inner.world_size

    def _counted(self, method: str, requests: list[Any]) -> list[Any]:
        documents = len({(r.task_name, r.doc_id) for r in requests})
        with self.make_bar(total=documents, desc=self.desc, unit="doc", leave=False) as bar:
            passed_on = self.inner.cache_hook
            self.inner.set_cache_hook(_Counting(passed_on, bar, len(requests), documents))
            try:
                answers = getattr(self.inner, method)(requests, disable_tqdm=True)
            finally:
                self.inner.set_cache_hook(passed_on)
            bar.update(documents - bar.n)
        return answers

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._counted("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._counted("loglikelihood_rolling", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._counted("generate_until", requests)
