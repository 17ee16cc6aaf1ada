"""The bytes that ship are the model that was evaluated: read the exported unified checkpoint back and prove it.

`read_exported` dequantizes every quantized Linear weight from the exported safetensors, by the format ModelOpt
wrote into hf_quant_config.json (the formulas are ModelOpt 0.47's export, modelopt/torch/export/quant_utils.py
`to_quantized_weight` and `pack_int4_in_uint8`, inverted):

| quant_algo | weight bytes | dequantized |
|---|---|---|
| FP8 | float8_e4m3fn, one fp32 `weight_scale` | w · s |
| FP8_PER_CHANNEL_PER_TOKEN | float8_e4m3fn, fp32 `weight_scale` per output row | w · s[:, None] |
| W8A8_SQ_PER_CHANNEL, W8A16 | int8, fp32 `weight_scale` per output row | w · s[:, None] |
| W4A16_AWQ, W4A8_AWQ | uint8, two signed nibbles per byte along the output dim (low = even row), fp32 `weight_scale` per (row, group) | q · s[:, g] |
| MIXED_PRECISION (AutoQuantize) | each layer as its own `quantized_layers[layer].quant_algo` above | |

`verify_export` then checks, against the calibrated model restored from its saved state (the one evaluated):
- every quantized layer is exported, and its dequantized weight lies within one quantization step of the evaluated
  weight; the share of codes that differ is reported. They may differ: the evaluated weights are ModelOpt's
  fake-quantization rounded in bf16, the exported codes are computed from the same weight in fp32, so a weight
  on a rounding boundary can land one code apart (measured: ≤ 0.2 % of INT8/INT4 codes, a few % of FP8 codes).
  Therefore the candidate is evaluated *with the exported weights* (tasks/evaluate.py), and this step's
  tolerance only has to catch a wrong scale, packing or tensor;
- each exported activation scale (`input_scale`) and KV scale (`k_scale`, `v_scale`) equals the calibrated
  quantizer's amax / the format's largest value (448 for FP8, 127 for INT8), in fp32;
- a `pre_quant_scale` equals the calibrated one in bf16; every unquantized tensor (norms, with any pre-quant
  scale ModelOpt fused into them; embeddings) equals the evaluated model's, bit for bit in the build's dtype;
- the config a runtime reads (vocabulary, head counts, sizes, rope parameters, tied embeddings, ...) equals the
  source checkpoint's; the exported exclusions are layers the evaluated model left unquantized;
- the tokenizer files are there and load.

A mismatch raises ExportVerificationError naming the tensor or field, what was expected and what was found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from enginewright.errors import ExportVerificationError

FP8_MAX = 448.0
INT8_MAX = 127.0
# What of config.json a runtime reads to build the model; each must equal the source checkpoint's.
RUNTIME_CONFIG_FIELDS = ("architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
                         "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                         "max_position_embeddings", "rms_norm_eps", "rope_parameters", "rope_theta",
                         "rope_scaling", "tie_word_embeddings", "hidden_act", "bos_token_id", "eos_token_id")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
INT4_FORMATS = ("W4A16_AWQ", "W4A8_AWQ")
SUPPORTED = ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "W8A8_SQ_PER_CHANNEL", "W8A16", *INT4_FORMATS)
MIXED_PRECISION = "MIXED_PRECISION"


@dataclass
class ExportedModel:
    quant_algo: str
    exclude_modules: list[str]
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # quantized layer → dequantized fp32 weight
    steps: dict[str, torch.Tensor] = field(default_factory=dict)  # quantized layer → one quantization step
    layer_algos: dict[str, str] = field(default_factory=dict)  # quantized layer → its quant_algo (MIXED_PRECISION
    # lists one per layer under `quantized_layers`: modelopt/torch/export/unified_export_hf.py, 0.47.0)


@dataclass(frozen=True)
class ExportVerification:
    tensors: int  # tensors compared: quantized weights (dequantized) and unquantized ones
    scales: int  # activation, KV, pre-quant and weight scales compared
    config_fields: int
    codes_differing: float  # share of weight codes one step away from the evaluated weights' codes

    def summary(self) -> str:
        return (f"export verified: {self.tensors} tensors, {self.scales} scales, {self.config_fields} config fields; "
                f"{100 * self.codes_differing:.2f} % of weight codes one step from the fake-quantized weights")


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(out/2, in) uint8 → (out, in) int8 in [-8, 7]: byte j holds row 2j in its low and row 2j+1 in its high nibble."""
    low = (packed & 0x0F).to(torch.int16)
    high = ((packed >> 4) & 0x0F).to(torch.int16)
    low, high = torch.where(low > 7, low - 16, low), torch.where(high > 7, high - 16, high)
    out = torch.empty((packed.shape[0] * 2, packed.shape[1]), dtype=torch.int16)
    out[0::2], out[1::2] = low, high
    return out.to(torch.int8)


def bf16_spacing(values: torch.Tensor) -> torch.Tensor:
    """The spacing of bfloat16 values around each |value| (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(values.abs().clamp_min(2.0 ** -126))) - 7)


def fp8_step(values: torch.Tensor) -> torch.Tensor:
    """The spacing of float8_e4m3 values around each |value| (3 mantissa bits; subnormal spacing 2^-9)."""
    exponent = torch.floor(torch.log2(values.abs().clamp_min(2.0 ** -6)))
    return torch.exp2(exponent - 3)


def dequantize(quant_algo: str, weight: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized fp32 weight, one quantization step per element) of one exported Linear."""
    s = scale.float()
    if quant_algo in INT4_FORMATS:
        codes = unpack_int4(weight).float()
        per_element = s.repeat_interleave(codes.shape[1] // s.shape[1], dim=1)
        return codes * per_element, per_element
    if quant_algo in ("W8A8_SQ_PER_CHANNEL", "W8A16"):
        per_element = s[:, None].expand_as(weight)
        return weight.float() * per_element, per_element
    if quant_algo in ("FP8", "FP8_PER_CHANNEL_PER_TOKEN"):
        per_element = (s[:, None] if s.dim() == 1 else s).expand(weight.shape)
        codes = weight.float()
        return codes * per_element, fp8_step(codes) * per_element
    raise ExportVerificationError(f"quant_algo {quant_algo!r} cannot be verified; verified: {', '.join(SUPPORTED)}")


def read_exported(checkpoint_dir: Path) -> ExportedModel:
    from safetensors.torch import load_file

    quant = json.loads((checkpoint_dir / "hf_quant_config.json").read_text()).get("quantization", {})
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(checkpoint_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    exported = ExportedModel(quant_algo=str(quant.get("quant_algo")),
                             exclude_modules=list(quant.get("exclude_modules") or []),
                             config=json.loads((checkpoint_dir / "config.json").read_text()), tensors=tensors)
    per_layer = quant.get("quantized_layers") or {}
    for name, weight in tensors.items():
        if name.endswith(".weight") and weight.dtype in (torch.float8_e4m3fn, torch.int8, torch.uint8):
            layer = name.removesuffix(".weight")
            scale = tensors.get(f"{layer}.weight_scale")
            if scale is None:
                raise ExportVerificationError(f"{layer}.weight_scale: expected with the quantized weight, found none")
            algo = exported.quant_algo
            if algo == MIXED_PRECISION:
                if layer not in per_layer:
                    raise ExportVerificationError(f"{layer}: a quantized weight that quantized_layers does not list")
                algo = str(per_layer[layer]["quant_algo"])
            exported.layer_algos[layer] = algo
            exported.weights[layer], exported.steps[layer] = dequantize(algo, weight, scale)
    return exported


def quantized_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Linear layers whose weight quantizer is on (before folding): what must be exported quantized."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and getattr(getattr(m, "weight_quantizer", None), "is_enabled", False)}


def _amax(quantizer: Any) -> torch.Tensor | None:
    if quantizer is None or not quantizer.is_enabled or getattr(quantizer, "amax", None) is None:
        return None
    return quantizer.amax.float().squeeze()


class _Checker:
    def __init__(self) -> None:
        self.scales = 0

    def close(self, what: str, expected: torch.Tensor, found: torch.Tensor | None, rtol: float) -> None:
        if found is None:
            raise ExportVerificationError(f"{what}: expected {_show(expected)}, found none in the export")
        found, expected = found.float().squeeze(), expected.float().squeeze()
        if found.shape != expected.shape or not torch.allclose(found, expected, rtol=rtol, atol=1e-12):
            raise ExportVerificationError(f"{what}: expected {_show(expected)}, found {_show(found)}")
        self.scales += 1


def _show(t: torch.Tensor) -> str:
    return f"{t.item():.6g}" if t.numel() == 1 else f"shape {tuple(t.shape)}, first {t.flatten()[0].item():.6g}"


@dataclass
class EvaluatedSnapshot:
    """What verification compares against, taken from the calibrated model before export changes it: each quantized
    layer's fake-quantized weight (what folding gives the evaluated candidate) and calibrated quantizer amaxes, and
    every other parameter (norms, with any pre-quant scale ModelOpt fused into them; embeddings)."""

    weights: dict[str, torch.Tensor]
    input_amax: dict[str, torch.Tensor]
    pre_quant: dict[str, torch.Tensor]
    kv_amax: dict[str, torch.Tensor]  # exported name (`…k_proj.k_scale`) → amax
    unquantized: dict[str, torch.Tensor]
    weight_amax_2: dict[str, torch.Tensor] = field(default_factory=dict)  # W4A8: the FP8 stage's amax


def weight_quantizer_stages(module: torch.nn.Module) -> tuple[Any, Any]:
    """(the quantizer that makes the weight codes, the one after it or None). W4A8-AWQ's weight quantizer is a
    ModelOpt SequentialQuantizer: INT4 blocks (the exported codes and `weight_scale`), then FP8 per tensor (the
    exported `weight_scale_2` = its amax / 448; the runtime applies it). `mtq.fold_weight` folds neither stage."""
    from modelopt.torch.quantization.nn import SequentialQuantizer

    quantizer: Any = module.weight_quantizer
    if isinstance(quantizer, SequentialQuantizer):
        return quantizer[0], quantizer[1]
    return quantizer, None


def snapshot_evaluated(model: torch.nn.Module) -> EvaluatedSnapshot:
    """Also of a model with offloaded layers (a layerwise memory plan): each layer is read materialized."""
    from enginewright.quant.placement import readable, readable_parameters

    layers = quantized_layers(model)
    snapshot = EvaluatedSnapshot({}, {}, {}, {}, {})
    name_to_module = dict(model.named_modules())
    with torch.no_grad():
        for name, module in layers.items():
            first, second = weight_quantizer_stages(module)
            with readable(module, model, name_to_module):
                snapshot.weights[name] = first(module.weight).detach().cpu()
            if second is not None and (amax := _amax(second)) is not None:
                snapshot.weight_amax_2[name] = amax.cpu()
            if (amax := _amax(module.input_quantizer)) is not None:
                snapshot.input_amax[name] = amax.cpu()
            if (pre := getattr(module.input_quantizer, "_pre_quant_scale", None)) is not None:
                snapshot.pre_quant[name] = pre.detach().float().squeeze().cpu()
        for name, module in model.named_modules():
            for kv in ("k", "v"):
                if (amax := _amax(getattr(module, f"{kv}_bmm_quantizer", None))) is not None:
                    snapshot.kv_amax[f"{name}.{kv}_proj.{kv}_scale"] = amax.cpu()
        prefixes = tuple(f"{name}." for name in layers)
        snapshot.unquantized = {name: p for name, p in readable_parameters(model).items()
                                if not name.startswith(prefixes)}
    return snapshot


def verify_export(exported: ExportedModel, evaluated: EvaluatedSnapshot, source_config: dict[str, Any], dtype: str,
                  checkpoint_dir: Path) -> ExportVerification:
    check = _Checker()
    differing, total = 0, 0
    for name, expected_weight in evaluated.weights.items():
        act_max = INT8_MAX if exported.layer_algos.get(name) == "W8A8_SQ_PER_CHANNEL" else FP8_MAX
        if name not in exported.weights:
            raise ExportVerificationError(f"{name}.weight: expected a quantized weight ({exported.quant_algo}), "
                                          "found none in the export")
        found, step = exported.weights[name], exported.steps[name]
        expected = expected_weight.float()
        if found.shape != expected.shape:
            raise ExportVerificationError(f"{name}.weight: expected shape {tuple(expected.shape)}, found {tuple(found.shape)}")
        off = (found - expected).abs()
        allowed = step + bf16_spacing(expected)  # one code, plus the evaluated weight's own bf16 rounding
        if (off > allowed).any():
            worst = int(torch.argmax(off - allowed))
            raise ExportVerificationError(
                f"{name}.weight: expected {expected.flatten()[worst].item():.6g} (the evaluated weight), found "
                f"{found.flatten()[worst].item():.6g} dequantized from the export, more than one step apart")
        differing += int((off > step * 0.5).sum())
        total += off.numel()
        if name in evaluated.input_amax:
            check.close(f"{name}.input_scale", evaluated.input_amax[name] / act_max,
                        exported.tensors.get(f"{name}.input_scale"), 1e-5)
        if name in evaluated.weight_amax_2:
            check.close(f"{name}.weight_scale_2", evaluated.weight_amax_2[name] / FP8_MAX,
                        exported.tensors.get(f"{name}.weight_scale_2"), 1e-5)
        if name in evaluated.pre_quant:
            check.close(f"{name}.pre_quant_scale", evaluated.pre_quant[name].to(torch.bfloat16),
                        exported.tensors.get(f"{name}.pre_quant_scale"), 1e-2)
    for exported_name, amax in evaluated.kv_amax.items():
        check.close(exported_name, amax / FP8_MAX, exported.tensors.get(exported_name), 1e-5)
    fields = _verify_config(exported, source_config)
    unquantized = _verify_unquantized(exported, evaluated, dtype)
    _verify_tokenizer(checkpoint_dir)
    return ExportVerification(tensors=len(evaluated.weights) + unquantized, scales=check.scales,
                              config_fields=fields, codes_differing=differing / total if total else 0.0)


def _verify_config(exported: ExportedModel, source: dict[str, Any]) -> int:
    compared = 0
    for key in RUNTIME_CONFIG_FIELDS:
        if key in source or key in exported.config:
            if source.get(key) != exported.config.get(key):
                raise ExportVerificationError(f"config.json {key}: expected {source.get(key)!r} (the source checkpoint), "
                                              f"found {exported.config.get(key)!r}")
            compared += 1
    return compared


def _verify_unquantized(exported: ExportedModel, evaluated: EvaluatedSnapshot, dtype: str) -> int:
    """Unquantized tensors (norms, embeddings) equal the evaluated model's, in the build's dtype; the exported
    exclusions are layers the evaluated model left unquantized. Returns the number of tensors compared."""
    want = getattr(torch, dtype)
    compared = 0
    for name, expected in evaluated.unquantized.items():
        found = exported.tensors.get(name)
        if found is None:
            continue  # a tied lm_head is exported once, as the embedding
        if found.dtype != want:
            raise ExportVerificationError(f"{name}: expected dtype {dtype} (unquantized), found {found.dtype}")
        if not torch.equal(found, expected.to(want)):
            worst = int(torch.argmax((found.float() - expected.float()).abs()))
            raise ExportVerificationError(f"{name}: expected {expected.flatten()[worst].item():.6g} (the evaluated "
                                          f"model), found {found.flatten()[worst].item():.6g}")
        compared += 1
    for excluded in exported.exclude_modules:
        if excluded in evaluated.weights:
            raise ExportVerificationError(f"exclude_modules lists {excluded!r}, which the calibrated model quantizes")
    return compared


def _verify_tokenizer(checkpoint_dir: Path) -> None:
    from transformers import AutoTokenizer

    missing = [f for f in TOKENIZER_FILES if not (checkpoint_dir / f).is_file()]
    if missing:
        raise ExportVerificationError(f"tokenizer: expected {', '.join(missing)} in {checkpoint_dir}, found none")
    try:
        AutoTokenizer.from_pretrained(checkpoint_dir)
    except Exception as exc:  # noqa: BLE001 (any load failure is the verification's failure)
        raise ExportVerificationError(f"tokenizer in {checkpoint_dir} does not load: {str(exc).splitlines()[0]}") from None


def verify_exported_checkpoint(source: Path, state: Any, dtype: str, checkpoint_dir: Path) -> ExportVerification:
    """Restore the calibrated model from its saved state (as evaluated) and verify `checkpoint_dir` against it
    (the build verifies inside the export step instead, from the model it exports: tasks/export.py)."""
    from tasks.quantize import restore_quantized

    return verify_export(read_exported(checkpoint_dir), snapshot_evaluated(restore_quantized(source, state, dtype)),
                         json.loads((source / "config.json").read_text()), dtype, checkpoint_dir)


def load_exported_weights(model: torch.nn.Module, checkpoint_dir: Path) -> int:
    """Put the exported (dequantized) weights into a restored fake-quantized model and turn the quantizer that made
    those codes off: the forward pass then computes with exactly the weight codes that ship (activation quantizers,
    and W4A8's FP8 weight stage, stay on).
    Returns the number of layers replaced."""
    exported = read_exported(checkpoint_dir)
    layers = quantized_layers(model)
    missing = sorted(set(layers) - set(exported.weights))
    if missing:
        raise ExportVerificationError(f"{missing[0]}.weight: expected a quantized weight in {checkpoint_dir}, found none")
    with torch.no_grad():
        for name, module in layers.items():
            weight: Any = module.weight
            weight.copy_(exported.weights[name].to(weight.dtype))
            first, _ = weight_quantizer_stages(module)  # W4A8 keeps its FP8 stage, as the runtime applies it
            first.disable()
    return len(layers)
