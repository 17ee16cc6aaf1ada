"""The Kubernetes GPU work pools: rendered from one table, committed as rendered, and every Job they give validated
against the Kubernetes schemas offline (kubernetes-validate ships them)."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest

from enginewright.errors import InputError
from enginewright.ops import gpu_pools

WORK_POOLS = Path(__file__).resolve().parents[1] / "infra" / "work-pools"


def test_the_committed_pool_templates_are_what_the_table_renders(tmp_path: Path) -> None:
    rendered = {p.name: p.read_text() for p in gpu_pools.render(tmp_path)}
    committed = {p.name: p.read_text() for p in WORK_POOLS.glob("gpu-kubernetes*.json")}
    assert committed == rendered, "run `enginewright pools render` and commit infra/work-pools/"


@pytest.mark.parametrize("name", sorted(gpu_pools.GPU_CLASSES))
@pytest.mark.parametrize("count", ["one", "a whole node"])
def test_every_class_gives_a_job_kubernetes_accepts(name: str, count: str) -> None:
    row = gpu_pools.GPU_CLASSES[name]
    gpus = 1 if count == "one" else row.gpus_per_node
    manifest = gpu_pools.job_manifest(row, gpus)
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)  # raises if not
    pod = manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": str(gpus)}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": row.product}
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{row.shm_gib}Gi"}
    assert manifest["spec"]["activeDeadlineSeconds"] == row.deadline_hours * 3600


def test_a_job_kubernetes_would_refuse_is_found() -> None:
    """The validation is real: a GPU count Kubernetes cannot parse as a quantity is refused."""
    manifest = gpu_pools.job_manifest(gpu_pools.GPU_CLASSES["h100"], 1)
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = {"n": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_the_pool_schema_bounds_the_gpu_count_by_the_class_node() -> None:
    for row in gpu_pools.GPU_CLASSES.values():
        schema = json.loads((WORK_POOLS / ("gpu-kubernetes.json" if row.name == gpu_pools.DEFAULT_CLASS
                                           else f"gpu-kubernetes-{row.name}.json")).read_text())
        count = schema["variables"]["properties"]["gpu_count"]
        assert (count["minimum"], count["maximum"]) == (1, row.gpus_per_node)
        assert schema["variables"]["properties"]["pod_watch_timeout_seconds"]["default"] >= 900
    with pytest.raises(InputError, match="ask for 1 to 8"):
        gpu_pools.check_gpu_count(gpu_pools.GPU_CLASSES["h200"], 9)
