"""The pipeline's GPU-capable steps on one model, each timed with its peak GPU memory and token rate.

Steps, in one process, with the pipeline's own functions (tasks/): load (bf16) → calibration data →
a plain bf16 forward pass over the calibration tokens (the reference) → ModelOpt FP8 calibration
(`quantize_in_place`, batch size "auto") → save state → export (`export_checkpoint`) → lm-eval baseline
(bf16) and candidate (restored, weights folded) on the same documents → optionally INT4-AWQ calibration.
Prints one table and writes it as JSON (--out).

    # SmolLM2 (converted checkpoint), or a Llama-3-8B-shaped model with random weights:
    python benchmarks/gpu_lane.py --model ~/.enginewright/models/SmolLM2-135M-Instruct --out smollm2.json
    python benchmarks/gpu_lane.py --random-llama8b --tokenizer DIR --calib-samples 512 --calib-seq-len 512 \\
        --awq-samples 128 --out llama8b.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

ROWS: list[dict] = []


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextmanager
def step(name: str, tokens: int | None = None, requests: Callable[[], int] | None = None):
    """Time a step; record wall seconds, peak GPU memory (allocated) and tokens or requests per second."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _sync()
    started = time.perf_counter()
    row: dict = {"step": name}
    yield row
    _sync()
    row["seconds"] = time.perf_counter() - started
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    if tokens:
        row["tokens"] = tokens
        row["tokens_per_s"] = tokens / row["seconds"]
    if requests is not None:
        row["requests"] = requests()
        row["requests_per_s"] = row["requests"] / row["seconds"]
    ROWS.append(row)
    print(f"  {name}: {row['seconds']:.1f} s", flush=True)


def random_llama8b(out: Path, tokenizer_dir: Path) -> Path:
    """A Llama-3-8B-shaped checkpoint with random bf16 weights (vocabulary of the given tokenizer)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=len(tokenizer), max_position_embeddings=8192,
                         rope_theta=500000.0, architectures=["LlamaForCausalLM"], torch_dtype="bfloat16",
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def requests_of(records: list[dict]) -> int:
    return sum(len(r["loglikelihoods"]) for r in records)


def main() -> None:
    from common import evaluate_first

    from enginewright.config.formats import FORMATS
    from enginewright.config.spec import CalibrationSpec, EvaluationSpec, QuantizationSpec
    from enginewright.quant.calibrate import QuantizedState, quantize_in_place
    from enginewright.quant.devices import calibration_batch_size, compute_capability, describe
    from enginewright.quant.models import load_model, load_tokenizer
    from tasks.calibration import build_calibration_set, load_calibration_ids
    from tasks.eval_data import check_eval_data
    from tasks.export import export_checkpoint
    from tasks.runtimes.simulated import load_candidate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a local HF checkpoint")
    source.add_argument("--random-llama8b", action="store_true", help="build a Llama-3-8B-shaped random model")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer for --random-llama8b")
    parser.add_argument("--calib", type=Path, required=True, help="calibration text file or directory")
    parser.add_argument("--calib-samples", type=int, default=512)
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--awq-samples", type=int, default=0, help="also time INT4-AWQ on this many sequences")
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument("--tasks", default="arc_easy,hellaswag")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="enginewright-gpu-lane-"))
    device = describe(compute_capability())
    print(f"device: {device}", flush=True)
    if args.random_llama8b:
        with step("build random 8B-shaped checkpoint"):
            checkpoint = random_llama8b(work / "llama8b-random", args.tokenizer)
    else:
        checkpoint = args.model
    calib_spec = CalibrationSpec(source=str(args.calib), num_samples=args.calib_samples, seq_len=args.calib_seq_len)
    tokens = args.calib_samples * args.calib_seq_len

    with step("load bf16"):
        model = load_model(checkpoint, "bfloat16")
    params = sum(p.numel() for p in model.parameters())
    batch = calibration_batch_size("auto", model.config, args.calib_seq_len)
    print(f"  {params / 1e9:.2f} B parameters; calibration batch size (auto): {batch}", flush=True)

    with step("calibration data (tokenize + sample)", tokens=tokens):
        calib = build_calibration_set(calib_spec, checkpoint, work / "calib.safetensors")
    input_ids = load_calibration_ids(calib)

    with step("bf16 forward over the calibration tokens", tokens=tokens), torch.no_grad():
        for chunk in input_ids.split(batch):
            model(input_ids=chunk.to(model.device))

    fp8 = QuantizationSpec(format="fp8")
    with step("FP8 calibrate (mtq.quantize, our forward loop)", tokens=tokens):
        quantize_in_place(model, input_ids, fp8, "auto")
    import modelopt.torch.opt as mto

    from enginewright.keys.hashing import sha256_file

    with step("save calibrated state (mto.save)"):
        mto.save(model, work / "fp8.mto.pth")
    state = QuantizedState(work / "fp8.mto.pth", sha256_file(work / "fp8.mto.pth"), FORMATS["fp8"].modelopt_preset, None)
    del model
    torch.cuda.empty_cache()

    with step("export unified HF checkpoint (restore + export_hf_checkpoint)") as row:
        exported = export_checkpoint(checkpoint, state, "bfloat16", work / "export-fp8")
        row["bytes_written"] = sum(p.stat().st_size for p in exported.rglob("*") if p.is_file())

    evaluation = EvaluationSpec(tasks=args.tasks.split(","), limit=args.limit, batch_size=args.eval_batch_size,
                                data_dir=str(args.eval_data))
    data = check_eval_data(Path(evaluation.data_dir), list(evaluation.tasks), 0)
    tokenizer = load_tokenizer(checkpoint)
    results: dict[str, list[dict]] = {}
    evaluate_first(load_model(checkpoint, "bfloat16"), tokenizer, evaluation.model_copy(update={"limit": 2}),
                   data, work)  # warm-up: task index, datasets cache, CUDA kernels
    for label, loader in (("baseline bf16", lambda: load_model(checkpoint, "bfloat16")),
                          ("candidate FP8 (folded)", lambda: load_candidate(checkpoint, state, "bfloat16", fold=True))):
        model = loader()
        with step(f"lm-eval {label}", requests=lambda label=label: requests_of(results[label])):
            results[label], _ = evaluate_first(model, tokenizer, evaluation, data, work)
        del model
        torch.cuda.empty_cache()

    if args.awq_samples:
        awq_spec = calib_spec.model_copy(update={"num_samples": args.awq_samples})
        awq_calib = build_calibration_set(awq_spec, checkpoint, work / "calib-awq.safetensors")
        awq_ids = load_calibration_ids(awq_calib)
        model = load_model(checkpoint, "bfloat16")
        awq_tokens = args.awq_samples * args.calib_seq_len
        with step("bf16 forward over the AWQ calibration tokens", tokens=awq_tokens), torch.no_grad():
            for chunk in awq_ids.split(batch):
                model(input_ids=chunk.to(model.device))
        with step("INT4-AWQ calibrate (mtq.quantize)", tokens=awq_tokens):
            quantize_in_place(model, awq_ids, QuantizationSpec(format="int4_awq"), "auto")
        del model

    by_step = {r["step"]: r for r in ROWS}
    forward = by_step["bf16 forward over the calibration tokens"]["seconds"]
    ratios = {
        "fp8_quantize_vs_forward": by_step["FP8 calibrate (mtq.quantize, our forward loop)"]["seconds"] / forward,
        "calibration_step_vs_forward": (by_step["calibration data (tokenize + sample)"]["seconds"]
                                        + by_step["FP8 calibrate (mtq.quantize, our forward loop)"]["seconds"]) / forward,
        "candidate_vs_baseline_eval_speed": by_step["lm-eval candidate FP8 (folded)"]["requests_per_s"]
        / by_step["lm-eval baseline bf16"]["requests_per_s"],
    }
    accuracy = {label: {t: sum(r["acc_norm"] for r in recs if r["task"] == t) / max(1, sum(r["task"] == t for r in recs))
                        for t in evaluation.tasks} for label, recs in results.items()}
    print(f"\n{device}; {params / 1e9:.2f} B parameters; calibration {args.calib_samples} × {args.calib_seq_len} "
          f"tokens, batch {batch}\n")
    print(f"{'step':<62}{'seconds':>9}{'peak GiB':>10}{'tok/s':>11}{'req/s':>9}")
    for row in ROWS:
        peak = f"{row['peak_gib']:.1f}" if row.get("peak_gib") is not None else "-"
        tok = f"{row['tokens_per_s']:.0f}" if "tokens_per_s" in row else ""
        req = f"{row['requests_per_s']:.0f}" if "requests_per_s" in row else ""
        print(f"{row['step']:<62}{row['seconds']:>9.1f}{peak:>10}{tok:>11}{req:>9}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(f"acc_norm: {json.dumps(accuracy)}")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "parameters": params, "batch": batch, "rows": ROWS,
                                        "ratios": ratios, "accuracy": accuracy}, indent=2))


if __name__ == "__main__":
    main()
