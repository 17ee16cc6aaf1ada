"""AutoQuantize's search once, budgets re-solved from it (tasks/auto_quantize.py), on the tiny Llama on the CPU:
the search state is reused, not recomputed; every budget's mix stays within it; the minimum is ModelOpt's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from enginewright.config.formats import FORMATS
from enginewright.config.spec import CalibrationSpec
from enginewright.errors import InputError
from tasks.auto_quantize import (
    _formats_of,
    _recipe_name,
    check_candidates,
    load_search_state,
    minimum_effective_bits,
    resolve,
    run_search,
    search_key,
    uncompressed_cost,
)
from tasks.calibration import build_calibration_set

CANDIDATES = ["fp8", "int4_awq"]


@pytest.fixture(scope="module")
def searched(tiny_model: Path, shared_data: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("auto-quantize")
    spec = CalibrationSpec(source=str(shared_data / "calib" / "wikitext2_train.txt"), num_samples=8, seq_len=32)
    calib = build_calibration_set(spec, tokenizer_dir, root / "calib.safetensors")
    key = search_key("local:tiny", calib, CANDIDATES, "gradient", 4, ["*lm_head*"])
    state = run_search(tiny_model, calib, CANDIDATES, "gradient", 4, 2, "bfloat16", root / "searches", key,
                       ["*lm_head*"])
    return state, calib, key, root


def test_the_search_state_is_kept_by_what_it_depends_on_and_found_again(searched, tiny_model: Path) -> None:
    state, calib, key, root = searched
    written = state.path.stat().st_mtime_ns
    again = run_search(tiny_model, calib, list(reversed(CANDIDATES)), "gradient", 4, 2, "bfloat16",
                       root / "searches", search_key("local:tiny", calib, list(reversed(CANDIDATES)), "gradient", 4,
                                                     ["*lm_head*"]), ["*lm_head*"])
    assert again.path == state.path and again.sha256 == state.sha256 and state.path.stat().st_mtime_ns == written
    assert search_key("local:tiny", calib, CANDIDATES, "kl_div", 4, ["*lm_head*"]) != key  # another search
    assert search_key("local:tiny", calib, CANDIDATES, "gradient", 8, ["*lm_head*"]) != key
    assert set(state.recipe_names.values()) == set(CANDIDATES)


def test_budgets_are_re_solved_from_one_search_within_their_bits(searched) -> None:
    state, *_ = searched
    search_state = load_search_state(state)
    floor = minimum_effective_bits(search_state)
    budgets = [floor, (floor + 16) / 2, floor + 0.95 * (16 - floor)]
    mixes = [resolve(search_state, b, state) for b in budgets]
    assert [m.effective_bits <= m.budget + 1e-9 for m in mixes] == [True, True, True]
    assert mixes[0].effective_bits == pytest.approx(floor)
    assert mixes[0].effective_bits <= mixes[1].effective_bits <= mixes[2].effective_bits
    assert "none" in mixes[2].groups.values()  # room to leave the most sensitive groups 16-bit
    with pytest.raises(InputError, match="leaves every layer group 16-bit"):  # 16 bits: nothing need be quantized
        resolve(search_state, 16.0, state)
    assert set(mixes[0].groups.values()) <= {*CANDIDATES, "none"} and "int4_awq" in mixes[0].groups.values()
    # q/k/v read one input and share one choice: one group, named by its first module
    assert not any(name.endswith(("k_proj", "v_proj", "up_proj")) for name in mixes[0].groups)
    assert mixes[0].config["algorithm"] == "max"  # ModelOpt's re-solved config keeps no per-format algorithm


def test_the_minimum_is_modelopts_own_figure(searched, tiny_model: Path, tmp_path: Path) -> None:
    """ModelOpt refuses an infeasible target at search time with its minimum; ours, from the state, is the same."""
    import modelopt.torch.quantization as mtq

    from enginewright.quant.models import load_model

    state, *_ = searched
    floor = minimum_effective_bits(load_search_state(state))
    with pytest.raises(ValueError, match="minimum achievable effective bits is") as refused:
        mtq.auto_quantize(load_model(tiny_model, "bfloat16"), constraints={"effective_bits": 4.5},
                          quantization_formats=["FP8_DEFAULT_CFG", "INT4_AWQ_CFG"], disabled_layers=["*lm_head*"],
                          data_loader=[torch.zeros(1, 8, dtype=torch.long)], forward_step=lambda m, b: m(input_ids=b),
                          loss_func=lambda out, b: out.logits.float().mean(), num_calib_steps=1, num_score_steps=1)
    theirs = float(re.search(r"minimum achievable effective bits is ([0-9]+\.[0-9]+)", str(refused.value))[1])
    assert floor == pytest.approx(theirs, abs=1e-3)


def test_the_checkpoints_headers_give_modelopts_bits_before_any_search(searched, tiny_model: Path) -> None:
    """enginewright/quant/effective_bits.py reads only safetensors headers; its minimum is the search state's, and a
    plain format's figure is what ModelOpt's cost model gives that format on every group (lm_head at 16)."""
    from enginewright.quant.effective_bits import minimum_effective_bits as minimum_before_search
    from enginewright.quant.effective_bits import plain_effective_bits

    state, *_ = searched
    search_state = load_search_state(state)
    assert minimum_before_search(tiny_model, CANDIDATES, []) == pytest.approx(minimum_effective_bits(search_state))
    by_name = {v: k for k, v in state.recipe_names.items()}
    for fmt in CANDIDATES:
        cost = 0.0
        for stat in search_state["candidate_stats"].values():
            names = [_recipe_name(r) for r in _formats_of(stat)]  # lm_head (kept) has only NONE
            cost += stat["costs"][names.index(by_name[fmt] if by_name[fmt] in names else "NONE")]
        assert 16 * cost / uncompressed_cost(search_state) == pytest.approx(plain_effective_bits(tiny_model, fmt))


def test_a_budget_out_of_range_or_below_the_minimum_is_one_line_naming_it(searched) -> None:
    state, *_ = searched
    search_state = load_search_state(state)
    floor = minimum_effective_bits(search_state)
    for bad, says in ((0, "outside (0, 16]"), (16.5, "outside (0, 16]"), (floor - 0.01, f"at least {floor:.2f}")):
        with pytest.raises(InputError, match=re.escape(says)):
            resolve(search_state, bad, state)


def test_a_candidate_this_worker_cannot_calibrate_is_refused_before_any_work() -> None:
    with pytest.raises(InputError, match=re.escape("quantization.auto.formats='nvfp4' needs an NVIDIA GPU with "
                                                   "compute capability 9.0+")):
        check_candidates(["fp8", "nvfp4"], None)
    check_candidates(["fp8", "nvfp4"], (9, 0))  # a Hopper GPU calibrates it


@pytest.mark.parametrize("fmt", [n for n in FORMATS if FORMATS[n].auto_quantize])
def test_a_formats_bits_are_the_cost_modelopts_search_gives_it(fmt: str) -> None:
    """Plain builds record the formats table's weight_bits as their effective bits, mixes ModelOpt's figure: one
    scale for the matrix's "fewest bits" only if they agree (ModelOpt 0.47 algorithms.py::estimate_quant_compression)."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization.algorithms import estimate_quant_compression
    from modelopt.torch.quantization.config import QuantizeConfig

    preset = QuantizeConfig(**getattr(mtq, FORMATS[fmt].modelopt_preset))
    assert 16 * estimate_quant_compression(preset) == pytest.approx(FORMATS[fmt].weight_bits)


def test_a_mix_quantizes_exports_as_mixed_precision_and_verifies(searched, tiny_model: Path, tmp_path: Path) -> None:
    """The mix's checkpoint goes through the export verification any bundle does, layer by layer in its format."""
    import json

    from tasks.auto_quantize import quantize_mix
    from tasks.export import export_and_verify

    state, calib, *_ = searched
    search_state = load_search_state(state)
    floor = minimum_effective_bits(search_state)
    mixes = [resolve(search_state, floor + k * (16 - floor) / 20, state) for k in range(1, 20)]
    mix = next(m for m in mixes if {"int4_awq", "fp8"} <= set(m.groups.values()))  # a budget that mixes both
    quantized = quantize_mix(tiny_model, calib, mix, "bfloat16", 2, tmp_path / "mix.pth")
    exported = export_and_verify(tiny_model, quantized, "bfloat16", tmp_path / "checkpoint")
    quant = json.loads((exported.checkpoint / "hf_quant_config.json").read_text())["quantization"]
    assert quant["quant_algo"] == "MIXED_PRECISION"
    algos = {layer: entry["quant_algo"] for layer, entry in quant["quantized_layers"].items()}
    assert set(algos.values()) == {"FP8", "W4A16_AWQ"}
    for group, fmt in mix.groups.items():  # each group exported in the format the mix chose for it
        if fmt != "none":
            assert algos[group] == {"fp8": "FP8", "int4_awq": "W4A16_AWQ"}[fmt]
    assert exported.verification.tensors > 0 and exported.verification.scales > 0
