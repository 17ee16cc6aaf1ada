"""What several benchmarks share: evaluate a loaded model on the first documents of each task, as the build does.

Scripts in this folder run as `python benchmarks/<name>.py`, so this folder is on sys.path and `import common`
finds this module."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """--model DIR or --random-llama8b (with --tokenizer): the two model sources of the GPU benchmarks
    (gpu_lane.random_llama8b builds the second)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a local checkpoint directory")
    source.add_argument("--random-llama8b", action="store_true", help="a Llama-3-8B-shaped model, random weights")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer for --random-llama8b")


def evaluate_first(model: Any, tokenizer: Any, evaluation: Any, data: Any, cache_dir: Path,
                   ) -> tuple[list[dict[str, Any]], float]:
    """lm-eval's per-document records of `model` on the first `evaluation.limit` documents of each task's seeded
    order (the documents a build's first looks judge), through the build's own path (`evaluate_documents` with the
    simulated runtime's HFLM), and the seconds they took."""
    from tasks.eval_data import document_order
    from tasks.evaluate import evaluate_documents
    from tasks.runtimes import simulated

    documents = {task: document_order(data, task, evaluation.sample_seed)[: evaluation.limit]
                 for task in evaluation.tasks}
    started = time.perf_counter()
    records = evaluate_documents(simulated.hf_lm(model, tokenizer, evaluation), evaluation, documents, data, cache_dir)
    return [r for task in evaluation.tasks for r in records[task]], time.perf_counter() - started
