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

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from prefect import task
from prefect.states import Completed

from enginewright.config.formats import FORMATS
from enginewright.config.spec import (
    AUTO_VARIANT_PREFIX,
    AutoQuantizeSpec,
    QuantizationSpec,
    SearchMethod,
    variant_quantization,
)
from enginewright.errors import InputError
from enginewright.keys.atomic import written_whole
from enginewright.keys.cache_policies import ChangeDetector, step_code_version
from enginewright.keys.hashing import sha256_file, sha256_json
from enginewright.quant.calibrate import (
    QuantizedState,
    choose_awq_block_size,
    forward_loop_over,
    prepare_as_exported,
    quant_config,
    quantized_in_features,
)
from enginewright.quant.devices import calibration_batch_size, check_format_supported, compute_capability
from enginewright.quant.models import load_model
from tasks.calibration import CalibrationSet, load_calibration_ids

NO_QUANT = "none"  # ModelOpt always adds "do not quantize" as a choice per group
ALWAYS_KEPT = ("*lm_head*",)  # never searched (enginewright.config.spec.AutoQuantizeSpec says why)
# The gradient method keeps every layer's activations for its backward pass; the no-grad calibration batch formula
# (enginewright.quant.devices) covers one layer's. A quarter of that batch, until a GPU run measures better.
GRADIENT_BATCH_HEADROOM = 0.125


@dataclass(frozen=True)
class SearchState:
    """ModelOpt's search state file (calibration statistics, scores and costs per layer group)."""

    path: Path
    sha256: str
    candidates: tuple[str, ...]
    method: SearchMethod
    score_steps: int
    recipe_names: dict[str, str]  # ModelOpt's name of each candidate's config (a preset's, or CUSTOM_<i>) → format
    awq_block_size: int | None = None  # the AWQ candidates' block size (chosen for the model, as in any build)

    def cache_identity(self) -> str:
        return self.sha256


@dataclass(frozen=True)
class Mix:
    """One budget's solution: the format of each layer group and the `mtq.quantize` config that applies them."""

    budget: float
    effective_bits: float  # achieved, ≤ budget
    groups: dict[str, str]  # first module of the group (q/k/v and gate/up share one) → format name or "none"
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What the manifest, the card and the tags record: the budget, the bits achieved, each group's format."""
        return {"budget": self.budget, "effective_bits": round(self.effective_bits, 4), "groups": dict(self.groups)}


def check_candidates(candidates: list[str], capability: tuple[int, int] | None) -> None:
    """One InputError line for a candidate this worker cannot calibrate (the spec refuses empty, repeated, unknown
    and unsearchable lists: enginewright.config.spec.AutoQuantizeSpec)."""
    for name in candidates:
        check_format_supported(name, capability, field="quantization.auto.formats")


def search_key(source_identity: str, calib: CalibrationSet, candidates: list[str], method: SearchMethod,
               score_steps: int, disabled_layers: list[str], awq_block_size: int | None = None) -> str:
    """What the search depends on, and the code that runs it (an upgrade searches again); the candidates' order
    does not matter to ModelOpt's solver."""
    return sha256_json({"source": source_identity, "calibration": calib.sha256, "candidates": sorted(candidates),
                        "method": method, "score_steps": score_steps, "disabled_layers": sorted(disabled_layers),
                        "awq_block_size": awq_block_size, "code": step_code_version("auto-quantize-search")})


def disabled_layers(auto: AutoQuantizeSpec) -> list[str]:
    return [*ALWAYS_KEPT, *auto.keep_unquantized]


def spec_search_key(quantization: QuantizationSpec, auto: AutoQuantizeSpec, source_identity: str,
                    calib: CalibrationSet) -> str:
    """`search_key` of an AutoQuantize spec (`auto` is `quantization.auto`)."""
    return search_key(source_identity, calib, list(auto.formats), auto.method, auto.score_batches,
                      disabled_layers(auto), quantization.awq_block_size)


def state_file(cache_dir: Path, key: str) -> Path:
    """Where the search state of `key` is kept; beside it (`.json`) what a found state needs without loading the
    model, and the lock (`.lock`) budgets built at once wait on."""
    return cache_dir / key[:32] / "search_state.pth"


def next_token_loss(output: Any, batch: torch.Tensor) -> torch.Tensor:
    """The gradient method's loss: the language-modelling loss of the calibration text itself."""
    logits = output.logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def run_search(checkpoint: Path, calib: CalibrationSet, candidates: list[str], method: SearchMethod, score_steps: int,
               batch_size: int | str, dtype: str, cache_dir: Path, key: str, disabled_layers: list[str],
               awq_block_size: int | None = None) -> SearchState:
    """The search state of `key` under `cache_dir`: found there (the model is not even loaded), or searched now and
    written whole, the state file last."""
    check_candidates(candidates, compute_capability())
    out_file = state_file(cache_dir, key)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # Budgets built at once (a matrix's variants) wait for one search instead of each running it.
    with FileLock(out_file.with_suffix(".lock")):
        found = _found(out_file, candidates, method, score_steps)
        if found is not None:
            return found
        return _search(checkpoint, calib, candidates, method, score_steps, batch_size, dtype, out_file,
                       disabled_layers, awq_block_size)


def _found(out_file: Path, candidates: list[str], method: SearchMethod, score_steps: int) -> SearchState | None:
    names_file = out_file.with_suffix(".json")
    if not (out_file.is_file() and names_file.is_file()):
        return None
    found = json.loads(names_file.read_text())
    return SearchState(path=out_file, sha256=sha256_file(out_file), candidates=tuple(candidates), method=method,
                       score_steps=score_steps, recipe_names=found["recipe_names"],
                       awq_block_size=found["awq_block_size"])


def _search(checkpoint: Path, calib: CalibrationSet, candidates: list[str], method: SearchMethod, score_steps: int,
            batch_size: int | str, dtype: str, out_file: Path, disabled_layers: list[str],
            awq_block_size: int | None) -> SearchState:
    names_file = out_file.with_suffix(".json")
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization.algorithms import QuantRecipe


    model = load_model(checkpoint, dtype)
    # Our configs, not ModelOpt's presets: the AWQ block size must divide this model's widths (tasks/quantize.py).
    block = (choose_awq_block_size(quantized_in_features(model), awq_block_size)
             if any(FORMATS[name].awq_blocks for name in candidates) else None)
    configs = [quant_config(QuantizationSpec(format=name), block if FORMATS[name].awq_blocks else None)
               for name in candidates]
    names = {QuantRecipe.get_auto_name_for_config(cfg) or f"CUSTOM_{i}": name  # model_quant.py's naming
             for i, (cfg, name) in enumerate(zip(configs, candidates, strict=True))}
    ids = load_calibration_ids(calib)
    batch = calibration_batch_size(batch_size, model.config, ids.shape[1],
                                   headroom=GRADIENT_BATCH_HEADROOM if method == "gradient" else 0.5)
    device = model.get_input_embeddings().weight.device  # type: ignore[operator]  # PreTrainedModel's method
    batches = [b.to(device) for b in ids.split(batch)]
    with written_whole(names_file) as tmp:
        tmp.write_text(json.dumps({"recipe_names": names, "awq_block_size": block}, indent=2))
    with written_whole(out_file) as tmp:
        mtq.auto_quantize(
            model, constraints={"effective_bits": 16.0},  # any feasible target: the budgets are re-solved
            quantization_formats=configs, data_loader=batches,
            forward_step=lambda m, b: m(input_ids=b, use_cache=False),
            loss_func=next_token_loss if method == "gradient" else None, method=method,
            num_calib_steps=len(batches), num_score_steps=min(score_steps, len(batches)),
            disabled_layers=disabled_layers, checkpoint=str(tmp))
    return SearchState(path=out_file, sha256=sha256_file(out_file), candidates=tuple(candidates), method=method,
                       score_steps=score_steps, recipe_names=names, awq_block_size=block)


def search_for(quantization: QuantizationSpec, checkpoint: Path, source_identity: str, calib: CalibrationSet,
               dtype: str, batch_size: int | str, searches_dir: Path) -> SearchState | None:
    """The search an AutoQuantize spec needs (found or run); None for a one-format spec."""
    auto = quantization.auto
    if auto is None:
        return None
    return run_search(checkpoint, calib, list(auto.formats), auto.method, auto.score_batches, batch_size, dtype,
                      searches_dir, spec_search_key(quantization, auto, source_identity, calib), disabled_layers(auto),
                      quantization.awq_block_size)


def _search_change(inputs: dict[str, Any]) -> Any:
    """The search step's cache key: for a one-format spec a constant (nothing to search); for AutoQuantize the state
    file's content address and its size and mtime, so a deleted or replaced file means search (or find) again."""
    quantization: QuantizationSpec = inputs["quantization"]
    if quantization.auto is None:
        return ["one format"]
    key = spec_search_key(quantization, quantization.auto, inputs["source_identity"], inputs["calib"])
    state = state_file(Path(inputs["searches_dir"]), key)
    return [key, [state.stat().st_size, state.stat().st_mtime_ns] if state.is_file() else None]


# The state file under its content address is the search's cache; Prefect's (ChangeDetector) only skips the step
# while that file stays as it was.
@task(name="auto-quantize-search", cache_policy=ChangeDetector(step="auto-quantize-search", key_fn=_search_change),
      persist_result=True)
def search_task(quantization: QuantizationSpec, checkpoint: Path, source_identity: str, calib: CalibrationSet,
                dtype: str, batch_size: int | str, searches_dir: Path) -> SearchState | None:
    if quantization.auto is None:  # the terminal says so ("skipped: not asked for"), not "done"
        return Completed(name="Skipped", message="Skipped: not asked for (one format; quantization.auto unset)",
                         data=None)  # type: ignore[return-value]  # Prefect hands the caller the state's data
    return search_for(quantization, checkpoint, source_identity, calib, dtype, batch_size, searches_dir)


def load_search_state(state: SearchState) -> dict[str, Any]:
    if sha256_file(state.path) != state.sha256:
        raise InputError(f"search state {state.path} changed since it was written; delete it to search again")
    from modelopt.torch.utils.serialization import safe_load

    # weights_only, as ModelOpt's own searcher loads this file (modelopt/torch/opt/searcher.py
    # load_search_checkpoint): a tampered state is refused above, a pickled payload never runs
    return safe_load(state.path, map_location="cpu")


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
    if set(groups.values()) == {NO_QUANT}:
        raise InputError(f"effective-bits budget {budget:g} leaves every layer group 16-bit on this model (the search "
                         "chose no quantization at all); give a budget below it, at least "
                         f"{minimum_effective_bits(search_state):.2f}")
    with warnings.catch_warnings():  # its note that the config's algorithm is "max": the module docstring says so
        warnings.filterwarnings("ignore", message="get_auto_quantize_config: returned config uses algorithm='max'")
        config = mtq.get_auto_quantize_config(search_state, constraints)
    return Mix(budget=budget, effective_bits=16 * chosen_cost / uncompressed_cost(search_state), groups=groups, config=config)


def _formats_of(stat: dict[str, Any]) -> list[Any]:
    """A group's candidate recipes, in the order of its `costs` and `scores`."""
    formats = stat["formats"]
    return list(formats) if not isinstance(formats, str) else [f.strip() for f in formats.strip("[]").split(",")]


@task(name="auto-quantize-search")
def shared_search_task(base: QuantizationSpec, variants: list[str], checkpoint: Path, source_identity: str,
                       calib: CalibrationSet, dtype: str, batch_size: int | str,
                       searches_dir: Path) -> SearchState | None:
    """A matrix's one search for all its auto-<bits> variants (the budget is not part of what a search depends on),
    run before the variants so that they find it; None without such a variant."""
    budgets = [v for v in variants if v.startswith(AUTO_VARIANT_PREFIX)]
    if not budgets:
        return None
    return search_for(variant_quantization(base, budgets[0]), checkpoint, source_identity, calib, dtype, batch_size,
                      searches_dir)


def quantize_mix(checkpoint: Path, calib: CalibrationSet, mix: Mix, dtype: str, batch_size: int | str,
                 out_file: Path, awq_block_size: int | None = None) -> QuantizedState:
    """A fresh model calibrated with the mix's config (what `calibrate_and_quantize` is for one format): its state
    goes through the same export and verification (MIXED_PRECISION: tasks/export_verify.py) as any bundle."""
    import modelopt.torch.quantization as mtq

    from enginewright.quant.placement import save_quantized

    model = load_model(checkpoint, dtype)
    ids = load_calibration_ids(calib)
    batch = calibration_batch_size(batch_size, model.config, ids.shape[1])
    mtq.quantize(model, mix.config, forward_loop=forward_loop_over(ids, batch))
    prepare_as_exported(model)
    with written_whole(out_file) as tmp:
        save_quantized(model, tmp)
    return QuantizedState(path=out_file, sha256=sha256_file(out_file), recipe=f"AutoQuantize {mix.budget:g} bits",
                          awq_block_size=awq_block_size, effective_bits=mix.effective_bits, mix=mix.summary())


def calibrate_mix(checkpoint: Path, calib: CalibrationSet, auto: AutoQuantizeSpec, search: SearchState, dtype: str,
                  batch_size: int | str, out_file: Path) -> QuantizedState:
    """An AutoQuantize build's quantize step: the budget re-solved from the search, then calibrated."""
    mix = resolve(load_search_state(search), auto.effective_bits, search)
    return quantize_mix(checkpoint, calib, mix, dtype, batch_size, out_file, search.awq_block_size)
