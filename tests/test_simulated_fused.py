"""The simulated candidate's fused FP8 activations compute ModelOpt's bits: the kernel against ModelOpt's own eager
FP8 fake quantization on values chosen to hit every rounding case, and a whole FP8 candidate's logits with and
without the fusion. (Its speed is a benchmark's business: benchmarks/eval_speed.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from modelopt.torch.quantization.tensor_quant import _fp8_eager

from enginewright.config.spec import CalibrationSpec, QuantizationSpec
from tasks.calibration import build_calibration_set
from tasks.quantize import calibrate_and_quantize
from tasks.runtimes.simulated import FUSED_FP8_BACKEND, _fused_fp8_entrypoint, load_candidate


def hard_values(dtype: torch.dtype) -> torch.Tensor:
    """Every E4M3 code and the midpoints between neighbouring codes (ties round to even), just beside them, the
    subnormal range, zero, both signs, beyond the clamp, plus wide random values."""
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
    codes = codes[torch.isfinite(codes)].unique()
    midpoints = (codes[1:] + codes[:-1]) / 2
    nudged = torch.cat([midpoints * (1 + 2.0 ** -12), midpoints * (1 - 2.0 ** -12)])
    generator = torch.Generator().manual_seed(0)
    wide = torch.randn(4096, generator=generator) * torch.logspace(-6, 3, 4096)
    values = torch.cat([codes, midpoints, nudged, codes * 1.5, torch.tensor([0.0, -0.0, 500.0, -1e4]), wide])
    return values.to(dtype)


class Quantizer:
    """What the backend's entrypoint reads of a TensorQuantizer: its static amax."""

    def __init__(self, amax: float) -> None:
        self.amax = torch.tensor(amax)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("amax", [448.0, 3.0, 0.017, 1e-9])  # 1e-9: below ModelOpt's epsilon, treated as 1
def test_the_fused_kernel_gives_modelopts_bits(dtype: torch.dtype, amax: float) -> None:
    values = hard_values(dtype) * (amax / 448.0 if amax > 1e-8 else 1 / 448.0)  # codes of this scale
    for shape in [(-1,), (8, -1), (2, 4, -1)]:  # the compiled loop takes any rank and length
        x = values[: values.numel() // 8 * 8].reshape(shape)
        expected = _fp8_eager(x, torch.tensor(amax))
        fused = _fused_fp8_entrypoint(x, Quantizer(amax))
        bits = torch.int32 if dtype == torch.float32 else torch.int16  # compared bit for bit: -0.0 is not 0.0
        assert fused.dtype == dtype and torch.equal(fused.view(bits), expected.view(bits))


@pytest.fixture(scope="module")
def fp8_state(tiny_model: Path, tokenizer_dir: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fp8")
    spec = CalibrationSpec(source=str(shared_data / "calib" / "tiny_shakespeare.txt"), num_samples=2, seq_len=16)
    calib = build_calibration_set(spec, tokenizer_dir, root / "c.safetensors")
    return calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format="fp8"), "bfloat16", 2, root / "q.pth")


def test_an_fp8_candidate_computes_the_same_logits_fused(tiny_model: Path, fp8_state) -> None:
    from modelopt.torch.quantization.nn import TensorQuantizer

    eager = load_candidate(tiny_model, fp8_state, "bfloat16", fold=True, fuse=False)
    fused = load_candidate(tiny_model, fp8_state, "bfloat16", fold=True)
    backends = [m.backend for m in fused.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]
    assert backends and set(backends) == {FUSED_FP8_BACKEND}  # every enabled quantizer: the 14 inputs' (weights folded)
    assert len(backends) == 14
    ids = torch.randint(3, 2000, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fused(input_ids=ids).logits, eager(input_ids=ids).logits)
