"""Device placement: which formats this worker may calibrate, and the calibration batch size."""

import pytest
from transformers import LlamaConfig

from enginewright.config.spec import CalibrationSpec
from enginewright.errors import InputError
from enginewright.quant.devices import (
    bytes_per_calibration_sequence,
    calibration_batch_size,
    check_format_supported,
)


def test_gpu_formats_are_refused_without_such_a_gpu() -> None:
    # NVFP4 calibrates on Hopper (ModelOpt's fake quantization; ../shared/FIELD_NOTES.md), the rest on Blackwell
    with pytest.raises(InputError, match="format='nvfp4' needs .* 9.0\\+ \\(Hopper\\)"):
        check_format_supported("nvfp4", None)
    with pytest.raises(InputError, match="compute capability 8.9"):
        check_format_supported("nvfp4", (8, 9))  # L40S
    check_format_supported("nvfp4", (9, 0))  # H100
    for fmt in ("nvfp4_awq", "mxfp8", "mxfp4"):
        with pytest.raises(InputError, match=f"format='{fmt}' needs .* 10.0\\+"):
            check_format_supported(fmt, None)
        with pytest.raises(InputError, match="compute capability 9.0"):
            check_format_supported(fmt, (9, 0))  # H100
        check_format_supported(fmt, (10, 0))  # B200
    for fmt in ("fp8", "int8_sq", "int4_awq", "w4a8_awq"):
        check_format_supported(fmt, None)  # simulated on the CPU


def test_auto_batch_size_is_8_on_the_cpu_and_a_number_passes_through() -> None:
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, vocab_size=128256)
    assert calibration_batch_size("auto", config, 512) == 8
    assert calibration_batch_size(3, config, 512) == 3


def test_memory_per_sequence_grows_with_its_tokens_and_holds_one_positions_logits() -> None:
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, vocab_size=128256)
    per_sequence = bytes_per_calibration_sequence(config, 512)
    one_position_logits = 128256 * 6  # bf16 + the float32 up-cast, last position only (logits_to_keep=1)
    per_token = 2 * (8 * 4096 + 3 * 14336)
    assert per_sequence == 512 * per_token + one_position_logits
    assert bytes_per_calibration_sequence(config, 1024) - per_sequence == 512 * per_token


def test_the_spec_accepts_auto_or_a_positive_batch() -> None:
    assert CalibrationSpec(source="x").batch_size == "auto"
    assert CalibrationSpec(source="x", batch_size=16).batch_size == 16
    for bad in (0, "big"):
        with pytest.raises(ValueError):
            CalibrationSpec(source="x", batch_size=bad)
