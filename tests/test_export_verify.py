"""A corrupted export cannot pass verification: a flipped weight scale, a wrong activation or KV scale, a missing
tensor, a dropped rope field, a missing tokenizer file — each is caught with one line naming what differs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from enginewright.config.spec import CalibrationSpec, QuantizationSpec
from enginewright.errors import ExportVerificationError
from tasks.calibration import build_calibration_set
from tasks.export import export_checkpoint
from tasks.export_verify import unpack_int4, verify_exported_checkpoint
from tasks.quantize import calibrate_and_quantize


@pytest.fixture(scope="module", params=["fp8", "int4_awq"])
def exported(request, shared_data: Path, tokenizer_dir: Path, tiny_model: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    calib = build_calibration_set(CalibrationSpec(source=str(shared_data / "calib" / "wikitext2_train.txt"),
                                                  num_samples=4, seq_len=32), tokenizer_dir, root / "c.safetensors")
    state = calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format=request.param,
                                                                       kv_cache=request.param == "fp8"),
                                   "bfloat16", 2, root / "q.pth")
    return request.param, state, export_checkpoint(tiny_model, state, "bfloat16", root / "checkpoint")


def corrupt(checkpoint: Path, tmp_path: Path, edit) -> Path:
    copy = shutil.copytree(checkpoint, tmp_path / "corrupted")
    tensors = load_file(str(copy / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    return copy


LAYER = "model.layers.1.self_attn.o_proj"


def test_the_untouched_export_verifies(exported, tiny_model: Path) -> None:
    _, state, checkpoint = exported
    assert verify_exported_checkpoint(tiny_model, state, "bfloat16", checkpoint).tensors == 20


def test_a_flipped_weight_scale_is_caught(exported, tiny_model: Path, tmp_path: Path) -> None:
    _, state, checkpoint = exported
    bad = corrupt(checkpoint, tmp_path, lambda t: t.__setitem__(f"{LAYER}.weight_scale", t[f"{LAYER}.weight_scale"] * 2))
    with pytest.raises(ExportVerificationError, match=rf"^{LAYER}.weight: expected .* \(the evaluated weight\), found "):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", bad)


def test_a_missing_quantized_tensor_is_caught(exported, tiny_model: Path, tmp_path: Path) -> None:
    _, state, checkpoint = exported
    bad = corrupt(checkpoint, tmp_path, lambda t: t.pop(f"{LAYER}.weight"))
    with pytest.raises(ExportVerificationError, match=rf"^{LAYER}.weight: expected a quantized weight .* found none"):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", bad)


@pytest.mark.parametrize("exported", ["fp8"], indirect=True)  # W4A16 has no activation or KV scales
def test_a_wrong_activation_or_kv_scale_is_caught(exported, tiny_model: Path, tmp_path: Path) -> None:
    _, state, checkpoint = exported
    name = "model.layers.0.self_attn.q_proj.input_scale"
    bad = corrupt(checkpoint, tmp_path, lambda t: t.__setitem__(name, t[name] * 1.5))
    with pytest.raises(ExportVerificationError, match=rf"^{name}: expected [\d.e-]+, found [\d.e-]+$"):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", bad)
    kv = "model.layers.0.self_attn.k_proj.k_scale"
    bad = corrupt(checkpoint, tmp_path / "kv", lambda t: t.pop(kv))
    with pytest.raises(ExportVerificationError, match=rf"^{kv}: expected [\d.e-]+, found none in the export$"):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", bad)


def test_a_dropped_rope_field_and_a_missing_tokenizer_are_caught(exported, tiny_model: Path, tmp_path: Path) -> None:
    _, state, checkpoint = exported
    copy = shutil.copytree(checkpoint, tmp_path / "no-rope")
    config = json.loads((copy / "config.json").read_text())
    rope = config.pop("rope_parameters")
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportVerificationError, match=rf"^config.json rope_parameters: expected {rope!r}".replace("[", r"\[")
                       .replace("{", r"\{").replace("(", r"\(")):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", copy)
    copy = shutil.copytree(checkpoint, tmp_path / "no-tokenizer")
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ExportVerificationError, match="^tokenizer: expected tokenizer.json in "):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", copy)


def test_int4_unpacking_inverts_modelopts_packing() -> None:
    from modelopt.torch.export.quant_utils import pack_int4_in_uint8

    codes = torch.randint(-8, 8, (6, 8)).float()
    packed = pack_int4_in_uint8(codes, torch.ones(6, 1), 8)
    assert torch.equal(unpack_int4(packed).float(), codes)


def test_a_norm_that_differs_from_the_evaluated_model_is_caught(exported, tiny_model: Path, tmp_path: Path) -> None:
    """Norms carry any pre-quant scale ModelOpt fused into them (AWQ's q/k/v): they must be the evaluated ones."""
    _, state, checkpoint = exported
    norm = "model.layers.0.input_layernorm.weight"
    bad = corrupt(checkpoint, tmp_path, lambda t: t.__setitem__(norm, t[norm] * 1.25))
    with pytest.raises(ExportVerificationError, match=rf"^{norm}: expected .* \(the evaluated model\), found "):
        verify_exported_checkpoint(tiny_model, state, "bfloat16", bad)
