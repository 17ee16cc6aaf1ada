"""The vLLM runtime: the bundle's checkpoint evaluated by vLLM itself, as a `vllm serve` release would compute it.

vLLM cannot be imported here (its pins conflict with the build's stack, and ModelOpt imports it when importable), so
`VllmLM` drives a scorer process in the worker's vLLM environment (tasks/runtimes/vllm_scorer.py, started with the
python that `ENGINEWRIGHT_VLLM_PYTHON` names, e.g. /opt/enginewright-vllm/bin/python from
scripts/gpu_worker/install.sh) and sends it
token ids: tokenization, the empty-context prefix and left truncation are lm-eval's own (TemplateLM, as HFLM does),
so the requests match the baseline's token for token.

lm-eval's stock `vllm` model class (lm_eval/models/vllm_causallms.py, 0.4.13) imports vLLM into lm-eval's process,
which is the build's: it cannot run here for the reason above; it also scores with `prompt_logprobs=1` the same way.

Unverified inside a whole build on a GPU: the project's GPU machine ran the scorer on requests this class exported
(docs/results.md, "vLLM on an H100"), not a build, whose stack is not installed there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from lm_eval.models.utils import resolve_max_length

from enginewright.errors import RuntimeLaneFailed
from enginewright.serving.runtimes.vllm import quantization_of
from tasks.runtimes.tokenized_lm import TokenizedLM

SCORER = Path(__file__).with_name("vllm_scorer.py")
PYTHON_ENV = "ENGINEWRIGHT_VLLM_PYTHON"


class VllmLM(TokenizedLM):
    """lm-eval model over a checkpoint scored by vLLM in its own process."""

    label = "vLLM"

    def __init__(self, checkpoint: str, tokenizer: Any, max_length: int | None = None, python: str | None = None,
                 start: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig

        self.checkpoint = Path(checkpoint)
        self.tokenizer = tokenizer
        config = AutoConfig.from_pretrained(self.checkpoint, trust_remote_code=False)
        self._max_length = max_length or resolve_max_length(config, tokenizer)
        self._process: subprocess.Popen[str] | None = None
        self.version: str | None = None
        if start:
            self._start(python or "")

    def _start(self, python: str) -> None:
        if not python:
            raise RuntimeLaneFailed(f"no vLLM environment: set {PYTHON_ENV} to its python "
                                    "(scripts/gpu_worker/install.sh)")
        command = [python, str(SCORER), "--model", str(self.checkpoint), "--max-model-len", str(self._max_length)]
        quantization = quantization_of(self.checkpoint)
        if quantization:
            command += ["--quantization", quantization]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                             stderr=sys.stderr)
        except OSError as exc:
            raise RuntimeLaneFailed(f"could not start the vLLM scorer with {python}: {exc}") from exc
        ready = self._read()
        self.version = ready["ready"]["vllm"]

    def _read(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeLaneFailed(f"the vLLM scorer exited (code {self._process.poll()}); its log is above")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeLaneFailed(f"vLLM: {message['error']}")
        return message

    def _ask(self, message: dict[str, Any]) -> list[Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()
        return list(self._read()["results"])


    def score_spans(self, spans: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        answers = self._ask({"loglikelihood": [{"tokens": tokens, "ctxlen": ctxlen} for tokens, ctxlen in spans]})
        return [(float(logprob), bool(greedy)) for logprob, greedy in answers]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        asks = []
        for request in requests:
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or [self.tokenizer.decode(self.eot_token_id)]
            asks.append({"tokens": self.tok_encode(context)[-self.max_length:], "stop": list(until),
                         "max_tokens": int(gen_kwargs.get("max_gen_toks", 256))})
        return [str(text) for text in self._ask({"generate": asks})]

    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[tuple[list[int], str]]:
        """(ids, text) of each prompt's greedy continuation, as the golden records keep them (tasks/smoke.py's
        greedy_continuations for a loaded model): the prompt tokenized as the tokenizer does by default, no stop
        but end-of-sequence."""
        asks = [{"tokens": self.tokenizer(prompt)["input_ids"], "stop": [], "max_tokens": max_new_tokens}
                for prompt in prompts]
        return [(list(ids), str(text)) for text, ids in self._ask({"generate": asks, "token_ids": True})]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise RuntimeLaneFailed("VllmLM scores multiple-choice loglikelihood and generative tasks; rolling "
                                "loglikelihood (perplexity tasks) is not implemented")

    def shutdown(self) -> None:
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.wait(timeout=120)
            self._process = None


def make_lm(bundle_dir: Path, tokenizer: Any, python: str) -> VllmLM:
    return VllmLM(str(bundle_dir / "checkpoint"), tokenizer, python=python)
