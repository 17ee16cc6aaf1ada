import json
from pathlib import Path

import pytest

from enginewright.bundle.manifest import MANIFEST_NAME, safe_relative_path, verify_bundle, write_manifest
from enginewright.errors import EnginewrightError


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "checkpoint").mkdir(parents=True)
    (root / "checkpoint" / "model.safetensors").write_bytes(b"weights" * 100)
    (root / "llm_api.yaml").write_text("backend: pytorch\n")
    write_manifest(root, {"bundle_id": "abc"})
    return root


def test_manifest_lists_every_file_with_size_and_sha256(bundle: Path) -> None:
    manifest = verify_bundle(bundle)
    assert [f["path"] for f in manifest["files"]] == ["checkpoint/model.safetensors", "llm_api.yaml"]
    assert manifest["files"][0]["size"] == 700
    assert manifest["schema_version"] == 1


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b: (b / "llm_api.yaml").write_text("backend: pytorcH\n"), "sha256"),
        (lambda b: (b / "llm_api.yaml").write_text("x"), "has 1 bytes"),
        (lambda b: (b / "llm_api.yaml").unlink(), "missing"),
        (lambda b: (b / "extra.bin").write_bytes(b"x"), "not in its manifest"),
        (lambda b: (b / MANIFEST_NAME).unlink(), "incomplete download"),
    ],
    ids=["changed", "truncated", "missing", "extra", "no-manifest"],
)
def test_verification_refuses_damaged_bundles(bundle: Path, tamper, message: str) -> None:
    tamper(bundle)
    with pytest.raises(EnginewrightError, match=message):
        verify_bundle(bundle)


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b", "a\\..\\b", ""])
def test_paths_escaping_the_bundle_are_refused(path: str) -> None:
    with pytest.raises(EnginewrightError, match="escapes the bundle directory"):
        safe_relative_path(path)


def test_manifest_with_escaping_path_is_refused(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["files"].append({"path": "../outside", "size": 1, "sha256": "0" * 64})
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(EnginewrightError, match="escapes"):
        verify_bundle(bundle)
