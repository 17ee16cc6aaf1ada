"""scripts/gpu_worker/wheelhouse.py: what the GPU worker's offline wheelhouse carries, and its parts' integrity."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_worker" / "wheelhouse.py"
spec = importlib.util.spec_from_file_location("wheelhouse", SCRIPT)
assert spec and spec.loader
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)


def test_the_lock_pins_vllm_0_26_0_and_carries_only_what_the_worker_image_lacks() -> None:
    lock = wheelhouse.read_pins(SCRIPT.parent / "vllm.lock")
    image = wheelhouse.read_pins(SCRIPT.parent / "image-freeze.txt")
    assert lock["vllm"] == "0.26.0"
    # vLLM 0.26.0 pins torch 2.11.0 and torchvision 0.26.0: exactly the image's, so never carried
    assert lock["torch"] == image["torch"] == "2.11.0" and lock["torchvision"] == image["torchvision"]
    carried = wheelhouse.missing_from_image(lock, image)
    assert "vllm" in carried and "numba" in carried  # vLLM pins numba 0.65; the image has 0.68
    assert not {"torch", "triton", "nvidia-cublas", "nvidia-cuda-runtime", "nvidia-nccl-cu13"} & set(carried)
    # What the H100 run found (docs/results.md): xgrammar is on vLLM's request path and needs apache-tvm-ffi at
    # vLLM's pin, which xgrammar 0.2.9's bindings outgrew
    assert lock["apache-tvm-ffi"] == "0.1.10" and lock["xgrammar"] == "0.2.7"
    trimmed = wheelhouse.read_names(SCRIPT.parent / "trimmed.txt")
    assert "flashinfer-python" in trimmed and not trimmed & set(lock)  # the trimmed lock leaves them out


def test_a_name_is_compared_as_pip_compares_it() -> None:
    assert wheelhouse.normalize("Typing_Extensions") == wheelhouse.normalize("typing.extensions") == "typing-extensions"
    assert wheelhouse.missing_from_image({"a-b": "1.0", "c": "2"}, {"a-b": "1.0", "c": "1"}) == {"c": "2"}


def make_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("pkg/__init__.py", payload)
        wheel.writestr("pkg-1.0.dist-info/RECORD", "pkg/__init__.py,,\n")
    return path


def test_a_recompressed_wheel_holds_the_same_files_uncompressed(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", b"x = 1\n" * 1000)
    wheelhouse.store_uncompressed(wheel)
    with zipfile.ZipFile(wheel) as stored:
        assert stored.testzip() is None
        assert stored.read("pkg/__init__.py") == b"x = 1\n" * 1000
        assert {i.compress_type for i in stored.infolist()} == {zipfile.ZIP_STORED}


def test_parts_reassemble_and_a_missing_or_damaged_part_is_named(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for index in range(3):  # incompressible payloads, so the stream needs several 64 KiB parts
        make_wheel(wheels / f"p{index}-1.0-py3-none-any.whl", __import__("os").urandom(100_000))
    parts = wheelhouse.pack(wheels, tmp_path / "out", 64 * 1024)
    assert len(parts) > 2 and (tmp_path / "out" / "PARTS").read_text().strip() == str(len(parts))
    assert wheelhouse.check(tmp_path / "out") == []
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    stream = b"".join(p.read_bytes() for p in parts)
    subprocess.run(["tar", "-xJ", "-C", str(unpacked)], input=stream, check=True)
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(p.name for p in wheels.iterdir())
    parts[1].write_bytes(parts[1].read_bytes()[:-1] + b"?")
    parts[2].unlink()
    assert wheelhouse.check(tmp_path / "out") == [f"{parts[1].name}: sha256 differs (damaged or from another build)",
                                                  f"{parts[2].name}: missing"]
    result = subprocess.run([sys.executable, str(SCRIPT), "check", str(tmp_path / "out")], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "missing" in result.stderr


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_part_size_that_is_not_positive_is_refused(value: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "build", str(tmp_path), "--part-mb", value],
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"--part-mb {value}" in result.stderr and not any(tmp_path.iterdir())


def test_the_build_lane_locks_the_projects_own_stack_on_the_images_torch() -> None:
    import tomllib

    lock = wheelhouse.read_pins(SCRIPT.parent / "build.lock")
    image = wheelhouse.read_pins(SCRIPT.parent / "image-freeze.txt")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    exact = dict(d.split(";")[0].split("==") for d in declared if "==" in d)
    for name, version in exact.items():
        name = wheelhouse.normalize(name.split("[")[0])
        if name == "torch":  # the dev machines' CPU pin; the worker runs the image's CUDA torch
            assert lock["torch"] == image["torch"] != version
        else:
            assert lock[name] == version, name
    carried = wheelhouse.missing_from_image(lock, image)
    assert {"prefect", "mlflow", "nvidia-modelopt", "lm-eval", "aiperf"} <= set(carried)
    assert not {"torch", "triton", "nvidia-cublas", "vllm"} & set(carried)  # vLLM never in the build's environment
    assert "fastapi" in lock and wheelhouse.read_pins(SCRIPT.parent / "vllm.lock")["fastapi"] != lock["fastapi"]


def test_the_build_requirements_replace_only_the_torch_pin(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["torch==2.13.0", "torchvision>=0.2", "lm-eval[hf]==0.4.13"]\n')
    assert wheelhouse.build_requirements(pyproject, {"torch": "2.11.0"}) == [
        "torchvision>=0.2", "lm-eval[hf]==0.4.13", "torch==2.11.0"]


def test_full_is_refused_for_the_build_lane(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "build", str(tmp_path), "--lane", "build", "--full"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--full with --lane build" in result.stderr and not any(tmp_path.iterdir())


CARRY = SCRIPT.parent / "carry.py"


def test_files_and_parts_are_dealt_into_carries_and_come_back_whole(tmp_path: Path) -> None:
    import os

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(900_000))
    (tmp_path / "data.txt").write_text("rows\n" * 1000)
    group = tmp_path / "stage" / "inputs"

    def carry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(CARRY), *args], capture_output=True, text=True, check=True)

    carry("stage", str(group), str(model), str(tmp_path / "data.txt"), "--part-mb", "1")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels / "p-1.0-py3-none-any.whl", os.urandom(200_000))
    wheelhouse.pack(wheels, tmp_path / "stage" / "wheelhouse", 100_000)
    # 1 MiB carries: the files (0.9 MB) and the wheelhouse's three parts (0.2 MB) need two, each with its group's sums
    out = carry("split", str(tmp_path / "carries"), str(group), str(tmp_path / "stage" / "wheelhouse"), "--mb", "1")
    carries = sorted((tmp_path / "carries").iterdir())
    assert len(carries) == out.stdout.count("carry-") == 2
    for c in carries:
        assert sum(p.stat().st_size for p in c.rglob("*") if p.is_file()) <= 2**20
        assert all((g / "SHA256SUMS").is_file() and (g / "PARTS").is_file() for g in c.iterdir())
    store = tmp_path / "store"  # what receive.sh does on the worker: merge each group's folders
    for c in carries:
        for g in c.iterdir():
            (store / g.name).mkdir(parents=True, exist_ok=True)
            for f in g.iterdir():
                (store / g.name / f.name).write_bytes(f.read_bytes())
    carry("unpack", str(store / "inputs"), str(tmp_path / "unpacked"))
    assert (tmp_path / "unpacked" / "model" / "weights.bin").read_bytes() == (model / "weights.bin").read_bytes()
    assert (tmp_path / "unpacked" / "data.txt").read_text() == "rows\n" * 1000
    assert wheelhouse.check(store / "wheelhouse") == []


def test_unpacking_an_incomplete_group_names_the_missing_part_and_writes_nothing(tmp_path: Path) -> None:
    import os

    (tmp_path / "f.bin").write_bytes(os.urandom(150_000))
    subprocess.run([sys.executable, str(CARRY), "stage", str(tmp_path / "g"), str(tmp_path / "f.bin"),
                    "--part-mb", "1"], check=True, capture_output=True)
    next((tmp_path / "g").glob("*.part-*")).unlink()
    result = subprocess.run([sys.executable, str(CARRY), "unpack", str(tmp_path / "g"), str(tmp_path / "dest")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "missing" in result.stderr and not (tmp_path / "dest").exists()
