"""AutoQuantize's search, once, and any number of effective-bits budgets re-solved from it (issue 15, first part).

ModelOpt's `mtq.auto_quantize` calibrates every candidate format and scores each layer group's sensitivity to each
(gradient or KL divergence); its `checkpoint=` file *is* the search state (calibration statistics, per-group scores
and costs), and a rerun that finds the file restores it instead of scoring again. Here that file is kept under a
content address of what the search depends on (the source revision, the calibration set, the candidate formats, the
method, the number of scoring batches, the layers kept unquantized), so a second budget costs no second search, and
each budget is solved from the file alone.

Read in nvidia-modelopt 0.47.0 (PyPI; github.com/NVIDIA/Model-Optimizer, tag 0.47.0):
- `modelopt/torch/quantization/model_quant.py::auto_quantize` (its arguments; `_AUTO_QUANTIZE_SUPPORTED_ALGORITHMS`:
  max, mse, local_hessian, smoothquant and the AWQ variants; `method="kl_div"` needs only a `forward_step` that
  returns logits) and `::get_auto_quantize_config` (a flat `mtq.quantize` config for a re-solved budget; its
  algorithm is always "max": per-format algorithms such as AWQ are not kept);
- `modelopt/torch/quantization/algorithms.py::_resolve_best_recipe` (the per-group choice get_auto_quantize_config
  builds its config from; private, used here for the per-layer table) and `::_verify_resolved_constraint` (the
  minimum achievable effective bits: 16 × Σ min cost / Σ uncompressed cost). A budget below that minimum is not
  refused by the re-solve (it returns the cheapest mix): `resolve` refuses it, naming the minimum.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from enginewright.atomic import written_whole
from enginewright.devices import check_format_supported, compute_capability
from enginewright.errors import InputError
from enginewright.formats import FORMATS
from enginewright.hashing import sha256_file, sha256_json
from enginewright.models import load_model
from tasks.calibration import CalibrationSet, load_calibration_ids
from tasks.quantize import QuantizedState

SearchMethod = Literal["gradient", "kl_div"]
NO_QUANT = "none"  # ModelOpt always adds "do not quantize" as a choice per group


@dataclass(frozen=True)
class SearchState:
    """ModelOpt's search state file (calibration statistics, scores and costs per layer group)."""

    path: Path
    sha256: str
    candidates: tuple[str, ...]
    method: SearchMethod
    score_steps: int
    recipe_names: dict[str, str]  # ModelOpt's name of each candidate's config (a preset's, or CUSTOM_<i>) → format

    def cache_identity(self) -> str:
        return self.sha256


@dataclass(frozen=True)
class Mix:
    """One budget's solution: the format of each layer group and the `mtq.quantize` config that applies them."""

    budget: float
    effective_bits: float  # achieved, ≤ budget
    groups: dict[str, str]  # first module of the group (q/k/v and gate/up share one) → format name or "none"
    config: dict[str, Any]


def check_candidates(candidates: list[str], capability: tuple[int, int] | None) -> None:
    """One InputError line for an empty, repeated, unknown or here-impossible candidate list."""
    if not candidates:
        raise InputError("quantization.auto.formats is empty; give one or more candidate formats, e.g. fp8,int4_awq")
    if len(set(candidates)) != len(candidates):
        raise InputError(f"quantization.auto.formats {candidates} names a format twice")
    for name in candidates:
        if name not in FORMATS:
            raise InputError(f"quantization.auto.formats: {name!r} is not a format; known: {', '.join(FORMATS)}")
        check_format_supported(name, capability)


def search_key(source_identity: str, calib: CalibrationSet, candidates: list[str], method: SearchMethod,
               score_steps: int, disabled_layers: list[str]) -> str:
    """What the search depends on; the candidates' order does not matter to ModelOpt's solver."""
    return sha256_json({"source": source_identity, "calibration": calib.sha256, "candidates": sorted(candidates),
                        "method": method, "score_steps": score_steps, "disabled_layers": sorted(disabled_layers)})


def next_token_loss(output: Any, batch: torch.Tensor) -> torch.Tensor:
    """The gradient method's loss: the language-modelling loss of the calibration text itself."""
    logits = output.logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def run_search(checkpoint: Path, calib: CalibrationSet, candidates: list[str], method: SearchMethod, score_steps: int,
               batch_size: int, dtype: str, cache_dir: Path, key: str, disabled_layers: list[str]) -> SearchState:
    """The search state of `key` under `cache_dir`: found there, or searched now and written whole."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization.algorithms import QuantRecipe

    from enginewright.spec import QuantizationSpec
    from tasks.quantize import choose_awq_block_size, quant_config, quantized_in_features

    check_candidates(candidates, compute_capability())
    out_file = cache_dir / key[:32] / "search_state.pth"
    model = load_model(checkpoint, dtype)
    # Our configs, not ModelOpt's presets: the AWQ block size must divide this model's widths (tasks/quantize.py).
    widths = quantized_in_features(model)
    configs = [quant_config(QuantizationSpec(format=name),
                            choose_awq_block_size(widths, None) if FORMATS[name].awq_blocks else None)
               for name in candidates]
    names = {QuantRecipe.get_auto_name_for_config(cfg) or f"CUSTOM_{i}": name  # model_quant.py's naming
             for i, (cfg, name) in enumerate(zip(configs, candidates, strict=True))}
    if not out_file.is_file():
        device = model.get_input_embeddings().weight.device  # type: ignore[operator]  # PreTrainedModel's method
        batches = [b.to(device) for b in load_calibration_ids(calib).split(batch_size)]
        with written_whole(out_file) as tmp:
            mtq.auto_quantize(
                model, constraints={"effective_bits": 16.0},  # any feasible target: the budgets are re-solved
                quantization_formats=configs, data_loader=batches,
                forward_step=lambda m, b: m(input_ids=b, use_cache=False),
                loss_func=next_token_loss if method == "gradient" else None, method=method,
                num_calib_steps=len(batches), num_score_steps=min(score_steps, len(batches)),
                disabled_layers=disabled_layers, checkpoint=str(tmp))
    return SearchState(path=out_file, sha256=sha256_file(out_file), candidates=tuple(candidates), method=method,
                       score_steps=score_steps, recipe_names=names)


def load_search_state(state: SearchState) -> dict[str, Any]:
    if sha256_file(state.path) != state.sha256:
        raise InputError(f"search state {state.path} changed since it was written; delete it to search again")
    return torch.load(state.path, map_location="cpu", weights_only=False)


def minimum_effective_bits(search_state: dict[str, Any]) -> float:
    """The fewest effective bits the candidates can reach: every group at its cheapest choice (ModelOpt's own
    infeasibility figure, algorithms.py::_verify_resolved_constraint)."""
    stats = search_state["candidate_stats"].values()
    return 16 * sum(min(s["costs"]) for s in stats) / uncompressed_cost(search_state)


def uncompressed_cost(search_state: dict[str, Any]) -> float:
    """The cost of the searched layers left 16-bit: effective bits are 16 × a mix's cost / this (ModelOpt's
    `_resolve_best_recipe` divides by the same figure)."""
    return search_state.get("cost_denominator") or sum(s.get("uncompressed_cost", max(s["costs"]))
                                                       for s in search_state["candidate_stats"].values())


def _recipe_name(recipe: Any) -> str:
    """"FP8_DEFAULT_CFG(effective-bits: 8.0)" → "FP8_DEFAULT_CFG" (ModelOpt's QuantRecipe as text)."""
    return str(recipe).split("(")[0].strip()


def resolve(search_state: dict[str, Any], budget: float, state: SearchState) -> Mix:
    """The mix for `budget` effective bits, re-solved from the search state without scoring again."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization.algorithms import _resolve_best_recipe

    if not 0 < budget <= 16:
        raise InputError(f"effective-bits budget {budget} is outside (0, 16]; give bits per weight, e.g. 5.4")
    floor = minimum_effective_bits(search_state)
    if budget < floor:
        raise InputError(f"effective-bits budget {budget} is below what the candidates {', '.join(state.candidates)} can "
                         f"reach on this model: at least {floor:.2f} (the layers they cannot quantize stay 16-bit)")
    constraints = {"effective_bits": budget}
    recipe = _resolve_best_recipe(search_state, constraints)
    stats = search_state["candidate_stats"]
    groups: dict[str, str] = {}
    chosen_cost = 0.0
    for hparam, choice in recipe.items():
        preset = _recipe_name(choice)  # NONE for a group left 16-bit
        groups[stats[hparam]["module_names"][0]] = state.recipe_names.get(preset, NO_QUANT)
        formats = [_recipe_name(f) for f in _formats_of(stats[hparam])]
        chosen_cost += stats[hparam]["costs"][formats.index(preset)]
    with warnings.catch_warnings():  # its note that the config's algorithm is "max": the module docstring says so
        warnings.filterwarnings("ignore", message="get_auto_quantize_config: returned config uses algorithm='max'")
        config = mtq.get_auto_quantize_config(search_state, constraints)
    return Mix(budget=budget, effective_bits=16 * chosen_cost / uncompressed_cost(search_state), groups=groups, config=config)


def _formats_of(stat: dict[str, Any]) -> list[Any]:
    """A group's candidate recipes, in the order of its `costs` and `scores`."""
    formats = stat["formats"]
    return list(formats) if not isinstance(formats, str) else [f.strip() for f in formats.strip("[]").split(",")]


def quantize_mix(checkpoint: Path, calib: CalibrationSet, mix: Mix, dtype: str, batch_size: int,
                 out_file: Path) -> QuantizedState:
    """A fresh model calibrated with the mix's config (what `calibrate_and_quantize` is for one format): its state
    goes through the same export and verification (MIXED_PRECISION: tasks/export_verify.py) as any bundle."""
    import modelopt.torch.quantization as mtq

    from enginewright.placement import save_quantized
    from tasks.quantize import forward_loop_over, prepare_as_exported

    model = load_model(checkpoint, dtype)
    mtq.quantize(model, mix.config, forward_loop=forward_loop_over(load_calibration_ids(calib), batch_size))
    prepare_as_exported(model)
    with written_whole(out_file) as tmp:
        save_quantized(model, tmp)
    return QuantizedState(path=out_file, sha256=sha256_file(out_file), recipe=f"AutoQuantize {mix.budget} bits",
                          awq_block_size=None)
