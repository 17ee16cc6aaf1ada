"""Which runtime serves which format: one table of format × runtime × minimum runtime version × GPU compute
capability. It drives the deploy fit check, the model card and `build --dry-run`; calibrating is the formats
table's column (enginewright.config.formats: `calibrate_min_capability`). No torch import: the deploy side reads it.

A format is served by a runtime at a version V on a GPU of capability C when some row of that pair has
`since <= V` and `capability <= C`; where several rows apply, the least demanding wins (NVFP4 on Hopper needs a
newer TensorRT-LLM than on Blackwell). A pair without rows is not served at all.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.runtimes.base import BLACKWELL, ServingRow


def _rows(fmt: str, runtime: str) -> list[ServingRow]:
    return [r for r in RUNTIMES[runtime].rows if r.format == fmt] if runtime in RUNTIMES else []


def _label(runtime: str) -> str:
    return RUNTIMES[runtime].label if runtime in RUNTIMES else runtime


def parse_version(runtime: str, version: str) -> Version:
    """A runtime version the table can compare; ValueError naming what it knows otherwise."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not in the serving table; known: {', '.join(RUNTIMES)}")
    oldest = min(Version(r.since) for r in RUNTIMES[runtime].rows)
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise ValueError(f"{version!r} is not a version (for example {RUNTIMES[runtime].default_version!r})") from None
    if parsed < oldest:
        raise ValueError(f"{_label(runtime)} {version} is older than any version the serving table knows "
                         f"({oldest}+)")
    return parsed


def serving_problem(fmt: str, runtime: str, version: str, capability: tuple[int, int]) -> str | None:
    """None when `runtime` at `version` serves `fmt` on a GPU of `capability`; else the reason, in words."""
    label = _label(runtime)
    rows = _rows(fmt, runtime)
    if not rows:
        servers = sorted(r.label for r in RUNTIMES.values() if _rows(fmt, r.name))
        return f"{label} cannot load {fmt} checkpoints" + (f" (served by {', '.join(servers)})" if servers else "")
    parsed = parse_version(runtime, version)
    released = [r for r in rows if Version(r.since) <= parsed]
    if not released:
        return f"{fmt} needs {label} ≥ {min(Version(r.since) for r in rows)}; the target runs {version}"
    if any(r.capability is None or r.capability <= capability for r in released):
        return None
    need = min(r.capability for r in released if r.capability is not None)
    newer = [r for r in rows if r.capability is not None and r.capability <= capability]
    hint = f" ({label} ≥ {newer[0].since} serves it on {capability[0]}.{capability[1]})" if newer else ""
    return (f"{fmt} on {label} {version} needs a GPU of compute capability {need[0]}.{need[1]}+; the target has "
            f"{capability[0]}.{capability[1]}{hint}")


def serving_summary(fmt: str) -> list[str]:
    """One line per runtime that serves `fmt`: from which version, on which GPUs."""
    return [f"{r.label}: {runtime_summary(fmt, r.name)}" for r in RUNTIMES.values()]


def runtime_summary(fmt: str, runtime: str) -> str:
    """Where `runtime` serves `fmt`: "not served", or each row's version and GPUs."""
    rows = _rows(fmt, runtime)
    if not rows:
        return "not served"
    return "; ".join(f"≥ {r.since} on " + (f"compute capability {r.capability[0]}.{r.capability[1]}+" if r.capability
                                          else "any supported GPU") for r in rows)


# A MIXED_PRECISION checkpoint (an AutoQuantize mix) names a quant_algo per layer in hf_quant_config.json's
# `quantized_layers`; each runtime module says from which version it loads one (`mixed_precision_since`).


def mix_serving_problem(groups: dict[str, str], runtime: str, version: str, capability: tuple[int, int]) -> str | None:
    """None when `runtime` serves this mix (layer group → format, "none" for 16-bit); else the first reason, naming
    the layer and its format."""
    label = _label(runtime)
    since = RUNTIMES[runtime].mixed_precision_since if runtime in RUNTIMES else None
    if since is None:
        servers = ", ".join(r.label for r in RUNTIMES.values() if r.mixed_precision_since)
        return f"{label} cannot load MIXED_PRECISION (AutoQuantize) checkpoints (served by {servers})"
    if parse_version(runtime, version) < Version(since):
        return f"a MIXED_PRECISION checkpoint needs {label} ≥ {since}; the target runs {version}"
    for layer, fmt in groups.items():
        problem = None if fmt == "none" else serving_problem(fmt, runtime, version, capability)
        if problem is not None:
            return f"layer {layer} is {fmt}: {problem}"
    return None


def mix_serving_summary(formats: list[str]) -> list[str]:
    """`serving_summary` for a mix of `formats`: one line per runtime."""
    lines = []
    for runtime in RUNTIMES.values():
        since = runtime.mixed_precision_since
        if since is None:
            lines.append(f"{runtime.label}: not served (no MIXED_PRECISION loader)")
            continue
        per_format = [f"{fmt} {runtime_summary(fmt, runtime.name)}" for fmt in formats]
        lines.append(f"{runtime.label}: MIXED_PRECISION ≥ {since}, where each layer's format is served: " + "; ".join(per_format))
    return lines


# Where a runtime computes a format otherwise than the build simulated it (ModelOpt's fake quantization of weights and
# activations), the build's golden records are not what that release should reproduce. NVFP4 below Blackwell: both
# runtimes serve FP4 weights with 16-bit activations through Marlin kernels (vLLM: ModelOptNvFp4Config, "Marlin W4A16
# below Blackwell", modelopt.py @ v0.26.0; TensorRT-LLM 1.3.0rc20: the Hopper NVFP4 path is Marlin, weight-only —
# ../shared/FIELD_NOTES.md), while the build simulated 4-bit activations too.
WEIGHT_ONLY_BELOW: dict[str, tuple[int, int]] = {"nvfp4": BLACKWELL}


def simulation_mismatch(fmt: str | None, capability: tuple[int, int]) -> str | None:
    """Why the build's simulated candidate is not what this GPU's runtime computes for `fmt`; None when it is."""
    below = WEIGHT_ONLY_BELOW.get(fmt or "")
    if below is not None and capability < below:
        return (f"{fmt} on compute capability {capability[0]}.{capability[1]} is served weight-only (16-bit "
                f"activations) while the build simulated {fmt} activations too")
    return None
