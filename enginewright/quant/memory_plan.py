"""Where a build's calibration and export run, decided before any work from the checkpoint and the worker's memory.

Plans, in the order they are preferred (the first that fits is chosen):
- `one_device`: the whole model on the first GPU (or in host memory on a CPU worker), as every build ran before.
- `device_map`: the weights split over the worker's GPUs by accelerate (`device_map="auto"` with a per-GPU budget);
  every layer stays resident, so calibration and export run as on one device.
- `layerwise_offload`: the weights that do not fit stay in host memory (on a CPU worker: on disk), one decoder layer
  at a time is brought to the device, and ModelOpt calibrates layer by layer (`algorithm: {"layerwise": {"enable":
  True}}`) and exports through its streaming path (one layer at a time; chosen by ModelOpt for any model with
  accelerate offload hooks). Read in nvidia-modelopt 0.47.0 (PyPI; github.com/NVIDIA/Model-Optimizer, tag 0.47.0):
  `modelopt/torch/quantization/mode.py::wrapped_calib_func` (every calibration algorithm but SVDQuant accepts
  `layerwise`), `model_calib.py::layerwise_calibrate` (with `persistent_materialization` bringing an offloaded layer
  onto the device once for all batches), `modelopt/torch/export/unified_export_hf.py::export_hf_checkpoint` (the
  `has_accelerate_offload` branch). tests/test_memory_plan.py shows that plan's quantizer scales and exported bytes
  equal the one-device plan's for every format that calibrates on the CPU.
- otherwise a refusal (InputError, exit 2) naming the need, the devices found and what would fit.

The arithmetic is an estimate with its parts printed (`build --dry-run`) and recorded in the manifest, so a wrong
choice can be traced to the figure that misled it. No torch here: the dry run plans without importing it.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from enginewright.config.formats import FORMATS
from enginewright.errors import InputError

GiB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Part of a device's free memory a plan may use: the rest is the CUDA context, the allocator's fragmentation and
# kernels' workspaces (the H200's FP8 calibration of an 8B model peaked 6 % above weights + activations).
DEVICE_HEADROOM = 0.90
LAYER_NAME = re.compile(r"^(?P<prefix>.*?\.layers)\.(?P<index>\d+)\.")
_HEADER_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                       "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

def _size(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 1024**2:.0f} MiB" if n >= 1024**2 else f"{n / 1024:.0f} KiB"


LAYERWISE_FORMATS = tuple(name for name, row in FORMATS.items() if row.layerwise_offload)
PlanKind = Literal["one_device", "device_map", "layerwise_offload"]
# Peak host memory (ru_maxrss) of calibrate + export + verification per byte of weights, measured on the lent H200 with
# the Llama-3-8B-shaped model in FP8 (13.75 GiB of weights; docs/results.md, benchmarks/memory_plan.py): 75.6 GiB on
# one device, 88.9 GiB with 22 of 32 layers offloaded. The resident export's device peak was 27.7 GiB: a second copy
# of the weights (MemoryNeed.export_extra).
HOST_PER_WEIGHT_BYTE: dict[str, float] = {"one_device": 5.5, "device_map": 5.5, "layerwise_offload": 6.5}


@dataclass(frozen=True)
class ModelFootprint:
    """Parameter counts read from a checkpoint's safetensors headers (no tensor is read) and its config."""

    layer_params: tuple[int, ...]  # per decoder layer, in order
    other_params: int  # embeddings, final norm, an untied lm_head
    hidden_size: int
    intermediate_size: int
    vocab_size: int

    @property
    def total_params(self) -> int:
        return sum(self.layer_params) + self.other_params


def read_footprint(checkpoint_dir: Path) -> ModelFootprint:
    config = json.loads((checkpoint_dir / "config.json").read_text())
    config = config.get("text_config", config)
    layers: dict[int, int] = {}
    other = 0
    for file in sorted(checkpoint_dir.glob("*.safetensors")):
        for name, count in _header_param_counts(file):
            match = LAYER_NAME.match(name)
            if match:
                index = int(match["index"])
                layers[index] = layers.get(index, 0) + count
            else:
                other += count
    if not layers:
        raise InputError(f"checkpoint {str(checkpoint_dir)!r}: no decoder layers (`*.layers.N.*` tensors) in its "
                         "safetensors files; the memory plan needs a decoder-only transformer")
    hidden = int(config["hidden_size"])
    return ModelFootprint(layer_params=tuple(layers[i] for i in sorted(layers)), other_params=other,
                          hidden_size=hidden, intermediate_size=int(config.get("intermediate_size", 4 * hidden)),
                          vocab_size=int(config["vocab_size"]))


def header_shapes(file: Path) -> list[tuple[str, list[int]]]:
    """(tensor name, shape) from a safetensors file's JSON header: 8 bytes of length, then the header."""
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return [(name, list(entry["shape"])) for name, entry in header.items() if name != "__metadata__"]


def _header_param_counts(file: Path) -> list[tuple[str, int]]:
    """(tensor name, element count) of every tensor in a safetensors file."""
    return [(name, math.prod(shape)) for name, shape in header_shapes(file)]


class MemoryNeed(BaseModel):
    """Bytes each part of calibration and export needs, at the build's dtype."""

    model_config = ConfigDict(frozen=True)

    weights: int
    largest_layer: int
    non_layer: int  # embeddings, norm, lm_head: resident on the device in every plan
    calibration_batch: int  # activations of one calibration batch (logits in float32 included)
    layer_inputs_cache: int  # layerwise: the inputs of one layer for every calibration sequence, twice (this + next)
    export_extra: int  # resident export: what it holds beside the weights (measured: about one more copy of them)

    def one_device(self) -> int:
        return self.weights + max(self.calibration_batch + self.largest_layer, self.export_extra)

    def per_layer_device(self) -> int:
        """Device memory of layer-at-a-time calibration with no layer resident beyond the one being calibrated."""
        return self.non_layer + 2 * self.largest_layer + self.calibration_batch + self.layer_inputs_cache

    def host_for(self, kind: PlanKind) -> int:
        """Host memory the quantize and export steps peak at: the saved state, the restored model, the export
        verification's snapshot and the exported tensors it reads back, and (offloaded) the weights themselves."""
        return int(HOST_PER_WEIGHT_BYTE[kind] * self.weights)



def estimate_need(footprint: ModelFootprint, dtype: str, fmt: str, num_samples: int, seq_len: int,
                  batch_size: int | str) -> MemoryNeed:
    """`batch_size` "auto" is planned at one sequence: the auto batch fills what the plan leaves free."""
    size = DTYPE_BYTES[dtype]
    batch = 1 if batch_size == "auto" else int(batch_size)
    return MemoryNeed(
        weights=footprint.total_params * size,
        largest_layer=max(footprint.layer_params) * size,
        non_layer=footprint.other_params * size,
        calibration_batch=batch * activation_bytes_per_sequence(footprint.hidden_size, footprint.intermediate_size,
                                                                footprint.vocab_size, seq_len, size),
        layer_inputs_cache=2 * num_samples * seq_len * footprint.hidden_size * size,
        export_extra=footprint.total_params * size,
    )


def activation_bytes_per_sequence(hidden: int, intermediate: int, vocab: int, seq_len: int, dtype_bytes: int) -> int:
    """Peak extra memory of one sequence in calibration's no-grad forward: one layer's activations (attention
    projections, the MLP's intermediate) per token, and the logits of the last position only, up-cast to float32
    (tasks/quantize.py::forward_loop_over asks for `logits_to_keep=1`: no quantizer reads the logits)."""
    return seq_len * dtype_bytes * (8 * hidden + 3 * intermediate) + (dtype_bytes + 4) * vocab


class Device(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # "cuda:0", or "cpu" on a worker without a GPU
    free_bytes: int  # what the plan may count on: free memory, or the configured limit where lower
    limited: bool = False  # the budget is ENGINEWRIGHT_DEVICE_MEMORY_LIMIT, not the device's own free memory

    @property
    def budget(self) -> int:
        return int(self.free_bytes * DEVICE_HEADROOM)


class Worker(BaseModel):
    """The memory a build can use here: its devices and where offloaded weights go (host memory, or disk on a CPU
    worker, whose device already is the host memory)."""

    model_config = ConfigDict(frozen=True)

    devices: tuple[Device, ...]
    spill: Literal["cpu", "disk"]
    spill_bytes: int
    host_bytes: int  # host memory available for the offloaded plans' copies

    def describe(self) -> str:
        devices = ", ".join(f"{d.name} {_size(d.free_bytes)}{' (limit)' if d.limited else ''}" for d in self.devices)
        disk = f", disk {_size(self.spill_bytes)} for offloaded layers" if self.spill == "disk" else ""
        return f"{devices}; host memory {_size(self.host_bytes)}{disk}"


class MemoryPlan(BaseModel):
    """The chosen plan, as the manifest records it and `--dry-run` prints it."""

    model_config = ConfigDict(frozen=True)

    kind: PlanKind
    devices: tuple[str, ...]  # the devices it uses, in order
    device_budget_bytes: tuple[int, ...]  # what each may hold (accelerate's max_memory for device_map/offload)
    spill: Literal["cpu", "disk"] | None  # where offloaded layers wait (layerwise_offload only)
    need: MemoryNeed
    worker: str  # Worker.describe() at planning time
    reason: str
    device_limit_bytes: int | None = None  # ENGINEWRIGHT_DEVICE_MEMORY_LIMIT where it capped a device (enforced on GPUs)

    @property
    def layerwise(self) -> bool:
        return self.kind == "layerwise_offload"

    def lines(self) -> list[str]:
        need = self.need
        return [
            f"plan: {self.kind} on {', '.join(self.devices)}" + (f", offload to {self.spill}" if self.spill else ""),
            f"why: {self.reason}",
            f"estimate: weights {_size(need.weights)}, largest layer {_size(need.largest_layer)}, "
            f"calibration batch {_size(need.calibration_batch)}, layer-input cache "
            f"{_size(need.layer_inputs_cache)}, resident export {_size(need.export_extra)}",
            f"worker: {self.worker}",
        ]


def choose_plan(need: MemoryNeed, worker: Worker, fmt: str, one_device_only: bool = False) -> MemoryPlan:
    """The first plan that fits `worker`, or InputError naming what would fit. `fmt`: a format, or an AutoQuantize
    build's variant name (auto-<bits>), which must fit one device (`one_device_only`: ModelOpt's search and the
    mix's calibration run on the model as loaded, undistributed)."""
    first = worker.devices[0]
    described = worker.describe()
    limit = next((d.free_bytes for d in worker.devices if d.limited), None)
    host_ok_resident = need.host_for("one_device") <= worker.host_bytes
    if need.one_device() <= first.budget and host_ok_resident:
        return MemoryPlan(kind="one_device", devices=(first.name,), device_budget_bytes=(first.budget,), spill=None,
                          need=need, worker=described, device_limit_bytes=limit,
                          reason=f"the model's tensors need {_size(need.one_device())} (weights, a calibration batch, "
                                 f"the export's copy; the process needs more), {first.name} can give "
                                 f"{_size(first.budget)}; host memory {_size(need.host_for('one_device'))} of "
                                 f"{_size(worker.host_bytes)}")
    if one_device_only:
        raise InputError(
            f"the model does not fit one device of this worker for quantization.auto ({fmt}): AutoQuantize searches "
            f"and calibrates it on one device, which needs {_size(need.one_device())} (weights {_size(need.weights)}) "
            f"and {_size(need.host_for('one_device'))} of host memory; found {worker.describe()}. Use a larger GPU, "
            "or one format (quantization.format), which can also run on several GPUs or layer at a time")
    gpus = [d for d in worker.devices if d.name.startswith("cuda")]
    spread = need.weights + need.export_extra + len(gpus) * (need.calibration_batch + need.largest_layer)
    if host_ok_resident and len(gpus) > 1 and spread <= sum(d.budget for d in gpus) and need.largest_layer * 2 + need.calibration_batch <= min(
            d.budget for d in gpus):
        # Each GPU keeps room for one batch's activations and a layer's transient copy beside its share of weights.
        reserve = need.calibration_batch + need.largest_layer
        return MemoryPlan(kind="device_map", devices=tuple(d.name for d in gpus),
                          device_budget_bytes=tuple(d.budget - reserve for d in gpus), spill=None, need=need,
                          worker=described, device_limit_bytes=limit,
                          reason=f"needs {_size(need.one_device())}; {len(gpus)} GPUs give "
                                 f"{_size(sum(d.budget for d in gpus))} together")
    per_layer = need.per_layer_device()
    host_ok = need.host_for("layerwise_offload") <= worker.host_bytes and need.weights <= worker.spill_bytes
    offloadable = FORMATS[fmt].layerwise_offload
    if per_layer <= first.budget and host_ok and offloadable:
        return MemoryPlan(kind="layerwise_offload", devices=(first.name,),
                          device_budget_bytes=(first.budget - (per_layer - need.non_layer),), spill=worker.spill,
                          need=need, worker=described, device_limit_bytes=limit,
                          reason=f"needs {_size(need.one_device())} on one device, {first.name} can give "
                                 f"{_size(first.budget)}; layer at a time it needs {_size(per_layer)} there "
                                 f"and {_size(need.host_for('layerwise_offload'))} of host memory")
    layerwise_fit = (f"layer at a time: a device with {_size(per_layer / DEVICE_HEADROOM)} free and "
                     f"{_size(need.host_for('layerwise_offload'))} of host memory"
                     + (f" and {_size(need.weights)} of disk" if worker.spill == "disk" else ""))
    found = ", ".join(f"{d.name} {_size(d.free_bytes)}{' (the device memory limit)' if d.limited else ' free'}"
                      for d in worker.devices)
    if not host_ok or not host_ok_resident:
        found += f"; host memory {_size(worker.host_bytes)}" + (
            f", disk {_size(worker.spill_bytes)}" if worker.spill == "disk" else "")
    if not offloadable:
        layerwise_fit += (f", with a format that calibrates layer at a time ({', '.join(LAYERWISE_FORMATS)}; "
                          f"{fmt} does not)")
    raise InputError(
        f"the model does not fit this worker for quantization.format={fmt!r}: calibrating and exporting it on one device needs "
        f"{_size(need.one_device())} (weights {_size(need.weights)}); found {found}. Would fit: one "
        f"device with {_size(need.one_device() / DEVICE_HEADROOM)} free and {_size(need.host_for('one_device'))} of "
        f"host memory, or {layerwise_fit} (a smaller "
        "calibration.batch_size, seq_len or num_samples shrinks the activations)")


def probe_worker(device_limit: int | None, offload_dir: Path) -> Worker:
    """This worker's devices and memory; `device_limit` (ENGINEWRIGHT_DEVICE_MEMORY_LIMIT) caps each device's budget.
    torch is imported only where a GPU driver is present (`/dev/nvidiactl`), so planning a CPU build stays cheap."""
    import shutil

    host = host_available_bytes()
    devices: list[Device] = []
    if Path("/dev/nvidiactl").exists():
        import torch

        for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            free, _total = torch.cuda.mem_get_info(index)
            devices.append(_capped(f"cuda:{index}", free, device_limit))
    if devices:
        return Worker(devices=tuple(devices), spill="cpu", spill_bytes=host, host_bytes=host)
    offload_dir = next(p for p in (offload_dir, *offload_dir.parents) if p.exists())
    return Worker(devices=(_capped("cpu", host, device_limit),), spill="disk",
                  spill_bytes=shutil.disk_usage(offload_dir).free, host_bytes=host)


def _capped(name: str, free: int, limit: int | None) -> Device:
    if limit is not None and limit < free:
        return Device(name=name, free_bytes=limit, limited=True)
    return Device(name=name, free_bytes=free)


def host_available_bytes() -> int:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), or the cgroup's limit where lower."""
    available = None
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available is None:
        raise RuntimeError("/proc/meminfo has no MemAvailable line")
    cgroup = Path("/sys/fs/cgroup/memory.max")
    if cgroup.is_file() and (text := cgroup.read_text().strip()) != "max":
        used = Path("/sys/fs/cgroup/memory.current")
        available = min(available, int(text) - (int(used.read_text()) if used.is_file() else 0))
    return available
