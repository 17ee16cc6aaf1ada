"""The vLLM side of the `vllm` runtime: a checkpoint loaded by vLLM, scoring token requests sent as JSON lines.

Runs in the GPU worker's vLLM environment (scripts/gpu_worker/install.sh), never in the build's interpreter: vLLM
and the build's stack pin incompatible packages (fastapi), and ModelOpt imports vLLM whenever it is importable.
Standard library and vLLM only; started by tasks/runtimes/vllm.py as a subprocess:

    python tasks/runtimes/vllm_scorer.py --model CHECKPOINT --quantization modelopt [--max-model-len N]

Protocol (one JSON object per line): first it writes {"ready": {"vllm": version, "seconds": load time}}; then for
each line read, {"loglikelihood": [{"tokens": [...], "ctxlen": n}, ...]} or {"generate": [{"tokens": [...],
"max_tokens": n, "stop": [...]}, ...]} (with "token_ids": true, also the generated ids), it writes {"results": [...]}
— [logprob, greedy] per loglikelihood request, the text (or [text, ids]) per generation — or {"error": "..."}. End of input ends it.

Alignment, read in vLLM 0.26.0's released wheel (vllm/logprobs.py `create_prompt_logprobs`: "logprob of first prompt
token is None"; vllm/v1/engine/logprobs.py `_update_prompt_logprobs` appends one entry per following position):
entry i of `prompt_logprobs` belongs to prompt token i, and holds that token's own logprob and rank besides the
top-k. So a continuation's log-likelihood is the sum of
entries ctxlen..n-1 at their own tokens, and it was the greedy answer when each rank is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any


def continuation_logprob(prompt_logprobs: list[Any], tokens: list[int], ctxlen: int) -> tuple[float, bool]:
    total, greedy = 0.0, True
    for i in range(max(ctxlen, 1), len(tokens)):
        entry = prompt_logprobs[i][tokens[i]]
        total += float(entry.logprob)
        greedy = greedy and entry.rank == 1
    return total, greedy


def memory_share(ceiling: float = 0.85, margin: float = 0.03) -> float:
    """What vLLM may ask for beside the processes already on the GPU. vLLM 0.26.0 refuses to start when the free
    memory is below `gpu_memory_utilization` × total (vllm/v1/worker/utils.py `request_memory`), and the build's
    process still holds its baseline and simulated candidate while the scorer starts."""
    import torch

    if not torch.cuda.is_available():  # vLLM on another platform (and the CPU stand-in): its own default check
        return ceiling
    free, total = torch.cuda.mem_get_info()
    return max(0.05, min(ceiling, free / total - margin))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder (the bundle's checkpoint/)")
    parser.add_argument("--quantization", default=None, help="vLLM's name for the checkpoint's format (modelopt, ...)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="share of the GPU vLLM may take [default: 0.85, or less when other processes (the build's "
                        "own models) hold memory: vLLM refuses to start when less than the share is free]")
    args = parser.parse_args()
    started = time.perf_counter()
    # The protocol owns the real stdout; vLLM logs to stdout (and its engine process inherits fd 1), so fd 1 becomes
    # stderr before vLLM is imported.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Run as a script, this file's folder is sys.path[0], and its neighbour vllm.py (the build side) would shadow vLLM
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    import vllm
    from vllm import LLM, SamplingParams, TokensPrompt

    llm = LLM(model=args.model, quantization=args.quantization, max_model_len=args.max_model_len, seed=0,
              gpu_memory_utilization=args.gpu_memory_utilization or memory_share(), trust_remote_code=False)
    out.write(json.dumps({"ready": {"vllm": vllm.__version__, "seconds": time.perf_counter() - started}}) + "\n")
    out.flush()
    score = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            if "loglikelihood" in message:
                requests = message["loglikelihood"]
                outputs = llm.generate([TokensPrompt(prompt_token_ids=r["tokens"]) for r in requests], score,
                                       use_tqdm=False)
                results: list[Any] = [list(continuation_logprob(o.prompt_logprobs, r["tokens"], r["ctxlen"]))
                                      for r, o in zip(requests, outputs, strict=True)]
            elif "generate" in message:
                requests = message["generate"]
                params = [SamplingParams(temperature=0, max_tokens=r["max_tokens"], stop=r.get("stop") or None)
                          for r in requests]
                outputs = llm.generate([TokensPrompt(prompt_token_ids=r["tokens"]) for r in requests], params,
                                       use_tqdm=False)
                results = [[o.outputs[0].text, list(o.outputs[0].token_ids)] if message.get("token_ids")
                           else o.outputs[0].text for o in outputs]
            else:
                raise ValueError(f"unknown request {sorted(message)}: expected loglikelihood or generate")
            out.write(json.dumps({"results": results}) + "\n")
        except Exception as exc:  # the caller falls back to the simulated candidate and records this line
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
    # End of input. Shut the engine core down before the interpreter does: left to interpreter teardown, vLLM 0.26.0
    # aborts ("terminate called without an active exception", SIGABRT), seen on the H100 after every answer was sent.
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None and hasattr(engine_core, "shutdown"):
        engine_core.shutdown()
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
