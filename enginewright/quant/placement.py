"""A memory plan carried out: how a checkpoint is loaded for it, and how a model with offloaded layers is saved and
restored (ModelOpt's `mto.save`/`mto.restore` see only meta tensors where accelerate has offloaded a layer).

Read in accelerate 1.15 (`accelerate/utils/modeling.py::get_state_dict_offloaded_model`) and nvidia-modelopt
0.47.0 (`modelopt/torch/quantization/utils/core_utils.py::enable_weight_access_and_writeback`,
`plugins/accelerate.py::_get_offload_hook`); the layout follows accelerate's device maps (module name → device,
"cpu" or "disk").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from enginewright.quant.memory_plan import MemoryPlan


def load_kwargs(plan: MemoryPlan, checkpoint: Path, dtype: str, offload_dir: Path) -> dict[str, Any]:
    """`from_pretrained` arguments that place the model as `plan` says; {} for one device (moved there after)."""
    if plan.kind == "one_device":
        return {}
    if plan.kind == "device_map":
        return {"device_map": "auto",
                "max_memory": {_accelerate_device(d): b for d, b in zip(plan.devices, plan.device_budget_bytes, strict=True)}}
    offload_dir.mkdir(parents=True, exist_ok=True)
    return {"device_map": layerwise_device_map(checkpoint, dtype, plan), "offload_folder": str(offload_dir)}


def _accelerate_device(name: str) -> int | str:
    return int(name.split(":")[1]) if name.startswith("cuda:") else name


def layerwise_device_map(checkpoint: Path, dtype: str, plan: MemoryPlan) -> dict[str, int | str]:
    """Everything but the decoder layers on the device; the layers there in order while the plan's budget lasts,
    the rest offloaded to the plan's spill (host memory, or disk on a CPU worker)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    layers_name, layers = decoder_layers(skeleton)
    device = _accelerate_device(plan.devices[0])
    size = torch.finfo(getattr(torch, dtype)).bits // 8
    room = plan.device_budget_bytes[0] - plan.need.non_layer
    device_map: dict[str, int | str] = {}
    for name in top_level_units(skeleton, layers_name):
        device_map[name] = device
    for index, layer in enumerate(layers):
        layer_bytes = sum(p.numel() for p in layer.parameters()) * size
        resident = room >= layer_bytes
        room -= layer_bytes if resident else 0
        device_map[f"{layers_name}.{index}"] = device if resident else plan.spill or "cpu"
    return device_map


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The ModuleList holding the decoder layers: the one with the most parameters."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no ModuleList of decoder layers")
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def top_level_units(model: torch.nn.Module, layers_name: str) -> list[str]:
    """The modules beside the decoder layers, as few as cover every parameter and buffer: the children of each
    ancestor of the layers' list that is not itself an ancestor (embeddings, norm, rotary embedding, lm_head)."""
    ancestors = {layers_name.rsplit(".", i)[0] for i in range(1, layers_name.count(".") + 1)} | {""}
    units = []
    for name, module in model.named_modules():
        if name not in ancestors:
            continue
        for child, _ in module.named_children():
            full = f"{name}.{child}" if name else child
            if full != layers_name and full not in ancestors:
                units.append(full)
    return units


def enforce_device_limit(plan: MemoryPlan) -> None:
    """On a GPU with ENGINEWRIGHT_DEVICE_MEMORY_LIMIT set, make torch's allocator refuse beyond it, so a constrained
    build is really constrained (an out-of-memory error, not a quiet overrun)."""
    if plan.device_limit_bytes is None or not torch.cuda.is_available():
        return
    for name in plan.devices:
        index = int(name.split(":")[1])
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, plan.device_limit_bytes / total), index)


def is_offloaded(model: torch.nn.Module) -> bool:
    from modelopt.torch.quantization.utils.core_utils import has_accelerate_offload

    return has_accelerate_offload(model)


def offloaded_units(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """The outermost modules with an accelerate offload hook (their weights are meta until materialized)."""
    from modelopt.torch.quantization.plugins.accelerate import _get_offload_hook

    done: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{prefix}.") for prefix in done):
            continue
        if _get_offload_hook(getattr(module, "_hf_hook", None)) is not None:
            done.append(name)
            yield name, module


def save_quantized(model: torch.nn.Module, path: Path) -> None:
    """`mto.save`'s file ({"modelopt_state", "model_state_dict"}: modelopt/torch/opt/conversion.py::save), with the
    offloaded layers' real tensors gathered from accelerate's weights map instead of their meta placeholders."""
    import modelopt.torch.opt as mto

    if not is_offloaded(model):
        mto.save(model, path)
        return
    from accelerate.utils.modeling import get_state_dict_offloaded_model

    torch.save({"modelopt_state": mto.modelopt_state(model), "model_state_dict": get_state_dict_offloaded_model(model)},
               path)


def restore_quantized_into(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """`mto.restore`, also for a model with offloaded layers: each offloaded unit is materialized, given its saved
    tensors (assign: the quantizers' buffers are meta there) and written back to its weights map."""
    import modelopt.torch.opt as mto

    if not is_offloaded(model):
        return mto.restore(model, path)
    from modelopt.torch.quantization.utils.core_utils import enable_weight_access_and_writeback
    from modelopt.torch.utils.serialization import safe_load

    # weights_only (torch's default, which ModelOpt's safe_load keeps, as mto.restore does): tensors and plain
    # containers only, so a state file someone else wrote cannot run code in this worker
    saved = safe_load(path, map_location="cpu")
    mto.restore_from_modelopt_state(model, saved["modelopt_state"])
    state = saved["model_state_dict"]
    units = []
    for name, unit in offloaded_units(model):
        prefix = f"{name}."
        with enable_weight_access_and_writeback(unit, model):
            unit.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=False,
                                 assign=True)
        units.append(prefix)
    rest = {k: v for k, v in state.items() if not k.startswith(tuple(units))}
    missing = model.load_state_dict(rest, strict=False).unexpected_keys
    if missing:
        raise ValueError(f"saved state {path} has tensors the model lacks: {missing[:3]}")
    return model


def readable(module: torch.nn.Module, model: torch.nn.Module, name_to_module: dict[str, torch.nn.Module]):
    """A context in which `module`'s weights can be read, offloaded or not (nothing is written back)."""
    from modelopt.torch.quantization.utils.core_utils import enable_weight_access_and_writeback

    return enable_weight_access_and_writeback(module, model, name_to_module, writeback=False)


def readable_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of every parameter, those of offloaded layers included (materialized one unit at a time)."""
    found = {n: p.detach().cpu() for n, p in model.named_parameters() if p.device.type != "meta"}
    name_to_module = dict(model.named_modules())
    for name, unit in offloaded_units(model):
        with readable(unit, model, name_to_module):
            found.update({f"{name}.{n}": p.detach().cpu() for n, p in unit.named_parameters()})
    return found
