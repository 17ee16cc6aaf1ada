"""The one small interface every serving runtime module fills in (`ServingRuntime`), and the shapes it uses.

A runtime module (tensorrt_llm.py, vllm.py) owns everything about its runtime: what it accepts (its contract, cited
from its source), which formats it serves from which version on which GPUs (`rows`), its Prometheus metric names,
the release files it renders (command line, scripts, options), and the model id its endpoint reports. The rest of
enginewright reaches a runtime only through `enginewright.serving.runtimes.RUNTIMES[name]`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

BLACKWELL, HOPPER, ADA, AMPERE, TURING = (10, 0), (9, 0), (8, 9), (8, 0), (7, 5)


@dataclass(frozen=True)
class ServingRow:
    """The runtime serves `format` from version `since` on a GPU of compute capability `capability` or newer."""

    format: str
    since: str  # the oldest runtime version known to serve it
    capability: tuple[int, int] | None  # the GPU it needs; None: any CUDA GPU the runtime supports
    source: str  # where the fact was read


@dataclass(frozen=True)
class RuntimeMetrics:
    """The runtime's Prometheus series the rendered rules read (each name cited in the runtime's module)."""

    metrics_path: str
    success: str  # counter of finished requests, label `finished_reason` (stop | length | abort ...)
    errors: str | None  # counter of failed requests, where the runtime has one
    e2e_latency: str  # histogram base names (…_bucket, …_sum, …_count)
    ttft: str
    time_per_output_token: str
    queue_time: str
    waiting: str  # gauge: requests queued
    generation_tokens: str  # counter of generated tokens
    kv_cache_usage: str  # gauge, 1 = full
    source: str
    # Prometheus `metric_relabel_configs` the scrape job needs (e.g. older releases' unprefixed names)
    relabel: tuple[Mapping[str, Any], ...] = ()


class ServingTarget(Protocol):
    """What a runtime reads of a deploy target (enginewright.serving.targets.DeployTarget has it)."""

    host: str
    port: int
    tensor_parallel_size: int | None
    serve_legacy_engine: bool
    triton_llmapi_template: Path | None


@dataclass(frozen=True)
class ReleaseFiles:
    """What a runtime wrote into a release folder: its deployment.json fields (the command under `command`)."""

    command: list[str]
    fields: dict[str, Any]


# render(folder being written, bundle dir, manifest, target, served_as = the release's model link name, the path
# that link points at) → what it wrote
Render = Callable[[Path, Path, Mapping[str, Any], ServingTarget, str, Path], ReleaseFiles]


@dataclass(frozen=True)
class ServingRuntime:
    name: str  # as deploy targets name it (`runtime:`)
    label: str  # as people name it
    default_version: str  # the serving image a target assumes when it names no version
    rows: tuple[ServingRow, ...]
    mixed_precision_since: str | None  # from which version it loads MIXED_PRECISION (AutoQuantize) checkpoints
    metrics: RuntimeMetrics
    script: str  # the release's start script, e.g. vllm-serve.sh
    served_path: Callable[[Path, ServingTarget], Path]  # what it loads of a bundle for a target
    # the options that size one instance as the release serves it (tensor_parallel_size, pipeline_parallel_size)
    parallelism: Callable[[Path, ServingTarget], Mapping[str, Any]]
    render: Render
    served_model_id: Callable[[Mapping[str, Any]], str]  # the id /v1/models reports, from deployment.json
    describe: Callable[[Mapping[str, Any], Path], str]  # markdown lines for the deploy artifact (release folder)


def write_script(path: Path, comment: str, command: list[str]) -> None:
    """A release's start script: `cd` to its own folder (every path in `command` is relative to it), then exec."""
    path.write_text(f"#!/bin/sh\n# Rendered by enginewright deploy; {comment}\ncd \"$(dirname \"$0\")\" || exit 1\n"
                    f"exec {shlex.join(command)} \"$@\"\n")
    path.chmod(0o755)
