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
