"""Kubernetes GPU work pools as data: one row per GPU class, one Prefect base job template rendered from each.

A Prefect Kubernetes work pool runs every flow run as its own Kubernetes Job; the template says what that Job asks
for. Per class: the GPU count as an `nvidia.com/gpu` limit (the NVIDIA device plugin's resource), a node selector
on the label GPU feature discovery puts on the class's nodes, the GPU taint tolerated, a memory-backed `/dev/shm`
(PyTorch's data loaders and NCCL use shared memory; a container's default is 64 MiB), scratch space for the build's
work directory and bundles, an active deadline, and a pod-watch timeout long enough to pull a TensorRT-LLM image.

The rendered files live in `infra/work-pools/` (`enginewright pools render`); tests/test_gpu_pools.py checks they
are what this table renders and validates every Job against the Kubernetes schemas, offline. The template's
structure (job_configuration with job_manifest, cluster_config, the watch timeouts, stream_output, and a JSON
schema of variables) is the Kubernetes worker's base job template (PrefectHQ/prefect,
`src/integrations/prefect-kubernetes/prefect_kubernetes/worker.py`, KubernetesWorkerJobConfiguration; its
`_populate_env_in_manifest` turns the `env` mapping into the container's list, as `job_manifest` below does).
Adding a class is adding a row.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginewright.errors import InputError

IMAGE = "enginewright/gpu-worker:0.1.0"  # docker/gpu-worker.Dockerfile (tests/test_infra.py checks it is built here)
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by GPU feature discovery (NVIDIA/k8s-device-plugin)


@dataclass(frozen=True)
class GpuClass:
    name: str
    product: str  # the class's `nvidia.com/gpu.product` label: check `kubectl get nodes -L nvidia.com/gpu.product`
    gpus_per_node: int  # the most GPUs one build can ask for (a Job's pod runs on one node)
    shm_gib: int  # size of the memory-backed /dev/shm
    scratch_gib: int  # the work directory (checkpoints, quantized state, bundles) on node-local storage
    deadline_hours: int  # a build still running after this is stopped by Kubernetes


GPU_CLASSES: dict[str, GpuClass] = {row.name: row for row in (
    GpuClass("a100", "NVIDIA-A100-SXM4-80GB", 8, 64, 400, 12),
    GpuClass("h100", "NVIDIA-H100-80GB-HBM3", 8, 64, 400, 12),
    GpuClass("h200", "NVIDIA-H200", 8, 96, 600, 12),
    GpuClass("b200", "NVIDIA-B200", 8, 128, 800, 12),
)}
DEFAULT_CLASS = "h100"  # the `gpu` pool's class on Kubernetes (infra/work-pools/gpu-kubernetes.json)
POD_WATCH_TIMEOUT_S = 1800  # a TensorRT-LLM image is tens of GB: pulling it takes minutes on a fresh node


def gpu_class(name: str) -> GpuClass:
    if name not in GPU_CLASSES:
        raise InputError(f"GPU class {name!r} is not in the table (enginewright/ops/gpu_pools.py); known: "
                         f"{', '.join(GPU_CLASSES)}")
    return GPU_CLASSES[name]


def check_gpu_count(row: GpuClass, count: int) -> None:
    if not 1 <= count <= row.gpus_per_node:
        raise InputError(f"GPU count {count} for class {row.name!r}: a build runs on one node of "
                         f"{row.gpus_per_node} GPUs; ask for 1 to {row.gpus_per_node}")


def pool_name(row: GpuClass) -> str:
    return "gpu" if row.name == DEFAULT_CLASS else f"gpu-{row.name}"


def base_job_template(row: GpuClass) -> dict[str, Any]:
    """Prefect's base job template for the class's Kubernetes pool."""
    gpus = "{{ gpu_count }}"
    container = {
        "name": "prefect-job",
        "image": "{{ image }}",
        "args": "{{ command }}",
        "env": "{{ env }}",
        "envFrom": [{"secretRef": {"name": "enginewright-credentials"}}],
        "resources": {"limits": {GPU_RESOURCE: gpus}, "requests": {GPU_RESOURCE: gpus}},
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": "/scratch"}],
    }
    job_manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "{{ name }}-", "labels": "{{ labels }}", "namespace": "{{ namespace }}"},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": "{{ active_deadline_seconds }}",
            "ttlSecondsAfterFinished": "{{ finished_job_ttl }}",
            "template": {"spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "{{ service_account_name }}",
                "nodeSelector": {PRODUCT_LABEL: row.product},
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [container],
                "volumes": [
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{row.shm_gib}Gi"}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": f"{row.scratch_gib}Gi"}},
                ],
            }},
        },
    }
    variables = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "title": "Name"},
            "env": {"type": "object", "title": "Environment Variables", "additionalProperties": {"type": "string"},
                    "default": {"ENGINEWRIGHT_HOME": "/scratch/enginewright"}},
            "labels": {"type": "object", "title": "Labels", "additionalProperties": {"type": "string"},
                       "default": {"enginewright.dev/gpu-class": row.name}},
            "command": {"type": "string", "title": "Command"},
            "namespace": {"type": "string", "default": "enginewright"},
            "image": {"type": "string", "default": IMAGE},
            "gpu_class": {"type": "string", "enum": [row.name], "default": row.name,
                          "description": f"This pool's GPU class ({row.product}); one pool per class."},
            "gpu_count": {"type": "integer", "minimum": 1, "maximum": row.gpus_per_node, "default": 1,
                          "description": "GPUs per build (tensor_parallel_size × pipeline_parallel_size); at most "
                                         f"one node's {row.gpus_per_node}."},
            "active_deadline_seconds": {"type": "integer", "minimum": 60, "default": row.deadline_hours * 3600},
            "service_account_name": {"type": "string", "default": "enginewright-worker"},
            "finished_job_ttl": {"type": "integer", "default": 3600},
            "cluster_config": {"type": "object", "default": None},
            "job_watch_timeout_seconds": {"type": "integer", "default": None},
            "pod_watch_timeout_seconds": {"type": "integer", "default": POD_WATCH_TIMEOUT_S},
            "stream_output": {"type": "boolean", "default": True},
        },
    }
    return {
        "job_configuration": {
            "command": "{{ command }}", "env": "{{ env }}", "labels": "{{ labels }}", "name": "{{ name }}",
            "namespace": "{{ namespace }}", "job_manifest": job_manifest, "cluster_config": "{{ cluster_config }}",
            "job_watch_timeout_seconds": "{{ job_watch_timeout_seconds }}",
            "pod_watch_timeout_seconds": "{{ pod_watch_timeout_seconds }}", "stream_output": "{{ stream_output }}",
        },
        "variables": variables,
    }


def job_manifest(row: GpuClass, gpu_count: int, name: str = "build", command: list[str] | None = None,
                 ) -> dict[str, Any]:
    """The Kubernetes Job a flow run of this class's pool gets: the template with its variables' defaults and
    `gpu_count` filled in, as Prefect's worker fills it (each "{{ variable }}" replaced by the value)."""
    check_gpu_count(row, gpu_count)
    template = base_job_template(row)
    values = {key: spec.get("default") for key, spec in template["variables"]["properties"].items()}
    values |= {"gpu_count": gpu_count, "name": name, "command": command or ["prefect", "flow-run", "execute"]}
    values["env"] = [{"name": k, "value": v} for k, v in values["env"].items()]  # the worker passes a list

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and node.startswith("{{ ") and node.endswith(" }}"):
            return copy.deepcopy(values[node[3:-3]])
        if isinstance(node, str) and "{{ " in node:
            for key, value in values.items():
                node = node.replace("{{ " + key + " }}", str(value))
        return node

    manifest = fill(template["job_configuration"]["job_manifest"])
    for resources in manifest["spec"]["template"]["spec"]["containers"][0]["resources"].values():
        resources[GPU_RESOURCE] = str(resources[GPU_RESOURCE])  # a quantity
    return manifest


def render(out_dir: Path) -> list[Path]:
    """Every class's base job template into `out_dir` (gpu-kubernetes.json for the default class's `gpu` pool,
    gpu-kubernetes-<class>.json for the others)."""
    written = []
    for row in GPU_CLASSES.values():
        name = "gpu-kubernetes.json" if row.name == DEFAULT_CLASS else f"gpu-kubernetes-{row.name}.json"
        path = out_dir / name
        path.write_text(json.dumps(base_job_template(row), indent=2) + "\n")
        written.append(path)
    return written
