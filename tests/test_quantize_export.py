import json
from pathlib import Path

import pytest
import torch

from enginewright.config.formats import CPU_FORMATS, FORMATS
from enginewright.config.spec import CalibrationSpec, QuantizationSpec
from enginewright.errors import InputError
from enginewright.quant.calibrate import choose_awq_block_size, quant_config
from tasks.calibration import build_calibration_set
from tasks.export import export_checkpoint, exported_quant_algo
from tasks.export_verify import read_exported, verify_exported_checkpoint
from tasks.quantize import calibrate_and_quantize, restore_quantized
from tasks.runtimes.simulated import load_candidate

# What ModelOpt writes into hf_quant_config.json for each CPU format (TensorRT-LLM reads it): the table's rows.
EXPECTED_ALGO = {name: FORMATS[name].quant_algo for name in CPU_FORMATS}


@pytest.fixture(scope="module")
def calib(shared_data: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    spec = CalibrationSpec(source=str(shared_data / "calib" / "wikitext2_train.txt"), num_samples=4, seq_len=32)
    return build_calibration_set(spec, tokenizer_dir, tmp_path_factory.mktemp("calib") / "c.safetensors")


def test_every_format_has_a_modelopt_preset() -> None:
    """Every format the spec accepts is a row with a ModelOpt preset; those not exported here need a GPU."""
    import typing

    import modelopt.torch.quantization as mtq

    from enginewright.config.spec import QuantFormat

    assert set(typing.get_args(QuantFormat)) == set(FORMATS)
    assert all(isinstance(getattr(mtq, f.modelopt_preset), dict) for f in FORMATS.values())
    assert all(f.quant_algo for f in FORMATS.values() if f.name in CPU_FORMATS)
    assert all(f.calibrate_min_capability for f in FORMATS.values() if f.name not in CPU_FORMATS)


@pytest.mark.parametrize("fmt", sorted(EXPECTED_ALGO))
def test_quantize_then_export_each_format(fmt: str, tiny_model: Path, calib, tmp_path: Path) -> None:
    state = calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format=fmt), "bfloat16", 2,
                                   tmp_path / "q.pth")
    out = export_checkpoint(tiny_model, state, "bfloat16", tmp_path / "checkpoint")
    quant = exported_quant_algo(out)
    assert quant["quant_algo"] == EXPECTED_ALGO[fmt]
    if fmt in ("int4_awq", "w4a8_awq"):
        assert quant["group_size"] == 64 == state.awq_block_size  # tiny model widths 64/128: 128 does not divide 64
    assert (out / "tokenizer.json").is_file() and list(out.glob("*.safetensors"))
    assert not list(tmp_path.glob("checkpoint.partial*"))
    # every file readable by a serving container running as another user (the weights were 0600)
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {f.name: 0o644 for f in out.iterdir()}

    # The bytes that ship are the model that was evaluated: every quantized layer, every scale, the config.
    verified = verify_exported_checkpoint(tiny_model, state, "bfloat16", out)
    # 2 layers × 7 quantized Linear, + embedding, final norm, 2 × 2 layer norms (lm_head is tied, so not exported)
    assert verified.tensors == 20 and verified.config_fields >= 12
    assert verified.scales >= {"fp8": 14, "int8_sq": 28, "w4a8_awq": 14}.get(fmt, 0)
    assert verified.codes_differing < 0.1, verified.summary()
    # ... and the candidate that is evaluated computes with exactly those weight codes.
    candidate = load_candidate(tiny_model, state, "bfloat16", fold=True, exported=out)
    exported = read_exported(out)
    for name, weight in exported.weights.items():
        assert torch.equal(candidate.get_submodule(name).weight, weight.to(torch.bfloat16)), name


def test_kv_cache_quantization_is_exported(tiny_model: Path, calib, tmp_path: Path) -> None:
    state = calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format="fp8", kv_cache=True), "bfloat16", 2,
                                   tmp_path / "q.pth")
    out = export_checkpoint(tiny_model, state, "bfloat16", tmp_path / "checkpoint")
    assert exported_quant_algo(out)["kv_cache_quant_algo"] == "FP8"


def test_restored_state_reproduces_the_calibrated_model(tiny_model: Path, calib, tmp_path: Path) -> None:
    """A failed export or a later evaluation never recalibrates: the saved state gives the same outputs."""
    state = calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format="int8_sq"), "bfloat16", 2,
                                   tmp_path / "q.pth")
    ids = torch.arange(1, 33).view(1, 32)
    with torch.no_grad():
        first = restore_quantized(tiny_model, state, "bfloat16")(input_ids=ids).logits
        second = restore_quantized(tiny_model, state, "bfloat16")(input_ids=ids).logits
    assert torch.equal(first, second)


def test_awq_block_size_is_chosen_to_divide_the_widths() -> None:
    assert choose_awq_block_size({576, 1536}, None) == 64  # SmolLM2-135M
    assert choose_awq_block_size({4096, 14336}, None) == 128  # Llama-3-8B
    with pytest.raises(InputError, match=r"awq_block_size=128 does not divide the model's layer widths \[576\]; use one of \[64, 32, 16\]"):
        choose_awq_block_size({576, 1536}, 128)


def test_quant_config_is_a_private_copy() -> None:
    import modelopt.torch.quantization as mtq

    before = json.dumps(mtq.INT4_AWQ_CFG, default=str)
    config = quant_config(QuantizationSpec(format="int4_awq", kv_cache=True), 64)
    assert json.dumps(mtq.INT4_AWQ_CFG, default=str) == before
    weight = next(e for e in config["quant_cfg"] if e["quantizer_name"] == "*weight_quantizer")
    assert weight["cfg"]["block_sizes"][-1] == 64
    assert any("bmm_quantizer" in e["quantizer_name"] for e in config["quant_cfg"])


@pytest.mark.parametrize("fmt", sorted(EXPECTED_ALGO))
def test_folded_weights_give_the_same_logits(fmt: str, tiny_model: Path, calib, tmp_path: Path) -> None:
    """`evaluation.fold_weights` is a speed-up only: folded and fake-quantized models agree exactly."""
    from tasks.runtimes.simulated import fold_weights

    state = calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format=fmt), "bfloat16", 2, tmp_path / "q.pth")
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    fake_quant = restore_quantized(tiny_model, state, "bfloat16")
    folded = restore_quantized(tiny_model, state, "bfloat16")
    fold_weights(folded)
    assert any(not m.weight_quantizer.is_enabled for m in folded.modules() if hasattr(m, "weight_quantizer"))
    with torch.no_grad():
        assert torch.equal(fake_quant(input_ids=ids).logits, folded(input_ids=ids).logits)


LEAK_PROBE = """
import gc, sys, weakref
from pathlib import Path
import enginewright.quant.models as models
import tasks.export as export
import tasks.quantize as quantize
from tasks.calibration import CalibrationSet
from enginewright.config.spec import QuantizationSpec
loaded = []
def load_and_watch(*args, **kwargs):
    model = real_load(*args, **kwargs)
    loaded.append(weakref.ref(model))
    return model
real_load, quantize.load_model = quantize.load_model, load_and_watch
checkpoint, calib_file, calib_sha, work = (Path(a) for a in sys.argv[1:5])
calib = CalibrationSet(path=calib_file, sha256=str(calib_sha), num_samples=4, seq_len=32)
state = quantize.calibrate_and_quantize(checkpoint, calib, QuantizationSpec(format="fp8"), "bfloat16", 2, work / "q.pth")
export.export_and_verify(checkpoint, state, "bfloat16", work / "checkpoint")
gc.collect()
print(len(loaded), sum(ref() is not None for ref in loaded))
"""


def test_no_model_a_step_loads_outlives_it_in_a_fresh_process(tiny_model: Path, calib, tmp_path: Path) -> None:
    """In a fresh interpreter (ModelOpt imported for the first time, as in a build), quantize and export each load a
    model; after a collection neither is left. It failed while ModelOpt was first imported inside quantize_in_place:
    PuLP's kept ImportErrors held that frame, and the model in it (tasks/quantize.py)."""
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", LEAK_PROBE, str(tiny_model), str(calib.path), calib.sha256,
                            str(tmp_path)], capture_output=True, text=True, timeout=600, check=True)
    assert probe.stdout.split()[-2:] == ["2", "0"], probe.stdout[-500:] + probe.stderr[-2000:]
