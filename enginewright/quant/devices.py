"""What this worker's accelerator can do: which quantization formats it can calibrate, how big a batch fits.

FP8, INT8 and INT4 formats calibrate anywhere (ModelOpt simulates them on the CPU too). NVFP4 and the MX
formats need ModelOpt's CUDA kernels and a Hopper (NVFP4) or Blackwell-class GPU (compute capability 9.0+/10.0+): they are offered
only where one is present. Serving-side limits (FP8 needs 8.9+ to *run*) are checked at deploy time.
"""

from __future__ import annotations

from collections.abc import Callable

from enginewright.config.formats import CPU_FORMATS, FORMATS
from enginewright.errors import InputError

AUTO_BATCH_CPU = 8
MAX_AUTO_BATCH = 64


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the first CUDA device, or None without one."""
    import torch  # here, not at import: `build --dry-run` of a CPU format never needs torch (1.5 s)

    return torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None


def describe(capability: tuple[int, int] | None) -> str:
    if capability is None:
        return "no CUDA GPU"
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "a GPU"
    return f"{name} (compute capability {capability[0]}.{capability[1]})"


GPU_FAMILIES = {(9, 0): "Hopper", (10, 0): "Blackwell"}


def check_format_supported(fmt: str, capability: tuple[int, int] | None | Callable[[], tuple[int, int] | None]
                           = compute_capability, field: str = "quantization.format") -> None:
    """Raise InputError when `fmt` cannot be calibrated on this worker (`capability`: the worker's, or how to probe
    it: only a format that needs a GPU probes for one); `field` names where the format was given."""
    needed = FORMATS[fmt].calibrate_min_capability
    if needed is None:
        return
    found = capability() if callable(capability) else capability
    if found is None or found < needed:
        raise InputError(
            f"{field}={fmt!r} needs an NVIDIA GPU with compute capability {needed[0]}.{needed[1]}+ "
            f"({GPU_FAMILIES.get(needed, 'or newer')}) to calibrate; this worker has {describe(found)}. Run it on such a worker of the gpu pool, "
            f"or pick {', '.join(CPU_FORMATS[:-1])} or {CPU_FORMATS[-1]}"
        )


def bytes_per_calibration_sequence(config, seq_len: int, dtype_bytes: int = 2) -> int:
    """Peak extra memory one sequence of calibration's no-grad forward pass needs (the memory plan's formula)."""
    from enginewright.quant.memory_plan import activation_bytes_per_sequence

    return activation_bytes_per_sequence(config.hidden_size, getattr(config, "intermediate_size", 4 * config.hidden_size),
                                         config.vocab_size, seq_len, dtype_bytes)


def calibration_batch_size(requested: int | str, config, seq_len: int, headroom: float = 0.5,
                           limit_bytes: int | None = None) -> int:
    """`requested` when it is a number; for "auto", as many sequences as fit in `headroom` of the free GPU
    memory after the model is loaded (at most 64; within `limit_bytes`, the device memory limit, where set),
    or 8 on the CPU."""
    import torch

    if requested != "auto":
        return int(requested)
    if not torch.cuda.is_available():
        return AUTO_BATCH_CPU
    free, _total = torch.cuda.mem_get_info()
    if limit_bytes is not None:
        free = min(free, limit_bytes - torch.cuda.memory_reserved())
    fits = int(free * headroom) // bytes_per_calibration_sequence(config, seq_len)
    return max(1, min(MAX_AUTO_BATCH, fits))
