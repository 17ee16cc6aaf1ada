"""MODEL_CARD.md: lineage, recipe, calibration fingerprint and the gate table, for people and for MLflow."""

from __future__ import annotations

from typing import Any

from enginewright.config.schemas import EngineLane
from enginewright.serving.serving_runtimes import mix_serving_summary, serving_summary
from tasks.evaluate import EvalResult


def mix_section(quantization: dict[str, Any]) -> str:
    """An AutoQuantize bundle's choice: the budget, the bits achieved, and a table of layer group → format."""
    mix = quantization.get("mix")
    if not mix:
        return ""
    rows = "\n".join(f"| `{name}` | {fmt if fmt != 'none' else 'none (16-bit)'} |" for name, fmt in mix["groups"].items())
    return f"""
## AutoQuantize mix
Budget {mix['budget']:g} effective bits, achieved **{mix['effective_bits']:.2f}**; candidates {', '.join(mix['candidates'])},
scored by {mix['method']} over {mix['score_batches']} calibration batches (ModelOpt `mtq.auto_quantize`). Each group is
named by its first module (q/k/v and gate/up share one format); lm_head{' and ' + ', '.join(mix['keep_unquantized']) if mix['keep_unquantized'] else ''} stay 16-bit.

| layer group | format |
|---|---|
{rows}
"""


def render_model_card(
    model_name: str, build_key: str, source: dict[str, Any], quantization: dict[str, Any],
    calibration: dict[str, Any], baseline: EvalResult, engine: EngineLane,
    evaluation: dict[str, Any], gate_markdown: str, export_verified: str,
) -> str:
    mix = quantization.get("mix")
    summary = mix_serving_summary(mix["candidates"]) if mix else serving_summary(str(quantization["format"]))
    serving = "\n".join(f"- {line}" for line in summary)
    bits = quantization.get("effective_bits")
    engine_line = (
        f"skipped — {engine['reason']}" if engine.get("status") == "skipped" else engine.get("status", "unknown")
    )
    return f"""# {model_name} — {quantization['format']} bundle

Build key `{build_key}`.

## Lineage
- Source: `{source['model']}` ({source['kind']}), revision `{source['revision']}`
- Quantization: `{quantization['format']}` (ModelOpt `{quantization['recipe']}`), exported as `{quantization['quant_algo']}`,
  KV cache: `{quantization['kv_cache_quant_algo'] or 'not quantized'}`, AWQ block size: {quantization['awq_block_size'] or 'n/a'},
  effective bits: {f"{bits:.2f}" if bits is not None else 'n/a'}
- Calibration: {calibration['num_samples']} × {calibration['seq_len']} tokens, seed {calibration['seed']},
  source fingerprint `{calibration['source_fingerprint'][:16]}…`, token ids sha256 `{calibration['tokens_sha256'][:16]}…`
- TensorRT-LLM engine: {engine_line}
- {export_verified[0].upper()}{export_verified[1:]} (tasks/export_verify.py)
{mix_section(quantization)}
## Accuracy (lm-evaluation-harness {baseline.lm_eval_version}, stock tasks on local data copies)
Limit {evaluation['limit'] or 'none'} documents per task (MMLU: per subject), {evaluation['num_fewshot']}-shot.
Baseline and candidate are evaluated on the same documents; the line under the gate table names the runtime
that computed the candidate (ModelOpt's simulated quantization with the exported weight codes, or TensorRT-LLM).

{gate_markdown.replace("## ", "### ")}
## Serving
{serving}

`trtllm-serve checkpoint/ --extra_llm_api_options llm_api.yaml` (TensorRT-LLM PyTorch backend), or `vllm serve
checkpoint/ --quantization modelopt` where vLLM serves the format; `enginewright deploy` renders either for a
target. `manifest.json` lists every file with its size and sha256; verify before serving.
"""
