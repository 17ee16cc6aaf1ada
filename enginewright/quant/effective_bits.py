"""Effective bits per weight, on ModelOpt's scale, from a checkpoint's safetensors headers (no tensor read, no torch).

ModelOpt's AutoQuantize reports a mix as 16 × its cost / the cost of every quantizable Linear left 16-bit, lm_head and
the layers kept unquantized counted at 16 bits (nvidia-modelopt 0.47.0 `modelopt/torch/quantization/algorithms.py`:
`_resolve_best_recipe`, `_verify_resolved_constraint`; tests/test_auto_quantize.py checks both figures below against
a real search state). A one-format build is put on the same scale: its decoder layers' Linear weights at the format's
`weight_bits` (16 × ModelOpt's `estimate_quant_compression` of its preset, also tested), lm_head at 16. So plain
formats and AutoQuantize budgets compare on one axis (the matrix's fewest_bits policy, its plot).
"""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

from enginewright.config.formats import FORMATS
from enginewright.quant.memory_plan import LAYER_NAME, header_shapes

HEAD = "lm_head"


def linear_weights(checkpoint_dir: Path) -> dict[str, int]:
    """Module name → weight elements of every Linear a format may quantize, plus lm_head (tied to the embeddings
    where the checkpoint has no lm_head.weight): the 2-D `.weight` tensors of the decoder layers."""
    weights: dict[str, int] = {}
    for file in sorted(checkpoint_dir.glob("*.safetensors")):
        for name, shape in header_shapes(file):
            if name.endswith(".weight") and len(shape) == 2 and (LAYER_NAME.match(name) or name == f"{HEAD}.weight"):
                weights[name.removesuffix(".weight")] = shape[0] * shape[1]
    if HEAD not in weights:  # tied: lm_head is a Linear over the embedding matrix
        config = json.loads((checkpoint_dir / "config.json").read_text())
        config = config.get("text_config", config)
        weights[HEAD] = int(config["vocab_size"]) * int(config["hidden_size"])
    return weights


def plain_effective_bits(checkpoint_dir: Path, fmt: str) -> float:
    """One format's build: every decoder Linear in `fmt`, lm_head 16-bit (the presets never quantize it)."""
    weights = linear_weights(checkpoint_dir)
    bits = {name: 16.0 if name == HEAD else FORMATS[fmt].weight_bits for name in weights}
    return _average(weights, bits)


def minimum_effective_bits(checkpoint_dir: Path, candidates: list[str], keep_unquantized: list[str]) -> float:
    """The fewest bits an AutoQuantize mix of `candidates` can have on this checkpoint: every searched layer in the
    cheapest candidate, lm_head and the layers matching `keep_unquantized` (fnmatch) at 16."""
    weights = linear_weights(checkpoint_dir)
    cheapest = min(FORMATS[f].weight_bits for f in candidates)
    bits = {name: 16.0 if name == HEAD or any(fnmatch(name, p) for p in keep_unquantized) else cheapest
            for name in weights}
    return _average(weights, bits)


def _average(weights: dict[str, int], bits: dict[str, float]) -> float:
    return sum(weights[n] * bits[n] for n in weights) / sum(weights.values())
