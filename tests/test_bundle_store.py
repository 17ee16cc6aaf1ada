"""S3 URI parsing, part sizing, and the local bundle store (the embedded default); the S3 store itself is
tested against a real SeaweedFS in tests/e2e/test_registry_stack.py."""

from pathlib import Path

import pytest

from enginewright.bundle.bundle_store import bundle_location, fetch_bundle, store_bundle
from enginewright.bundle.manifest import write_manifest
from enginewright.bundle.s3 import S3Location
from enginewright.config.settings import MiB, TransferSettings
from enginewright.errors import EnginewrightError, InputError


def test_s3_locations_parse_and_join() -> None:
    location = S3Location.parse("s3://models/bundles/")
    assert (location.bucket, location.key) == ("models", "bundles")
    assert location.child("abc/run/manifest.json").uri == "s3://models/bundles/abc/run/manifest.json"
    assert S3Location.parse("s3://models").child("x").key == "x"
    for bad in ("models/bundles", "s3://", "s3:///key", "file:///tmp"):
        with pytest.raises(InputError, match="is not s3://<bucket>"):
            S3Location.parse(bad)


def test_part_size_grows_only_when_a_file_would_need_more_than_10000_parts() -> None:
    """The part size our digests are computed at is the transfer manager's own (S3 allows 10,000 parts)."""
    from enginewright.bundle.s3 import part_size

    transfer = TransferSettings(part_size=64 * MiB)
    assert part_size(transfer, 10 * 1024 * MiB) == 64 * MiB
    huge = 64 * MiB * 10_000 + 1
    assert part_size(transfer, huge) * 10_000 >= huge > transfer.part_size * 10_000


def _bundle(root: Path) -> tuple[Path, dict]:
    bundle = root / "bundle"
    (bundle / "checkpoint").mkdir(parents=True)
    (bundle / "checkpoint" / "model.safetensors").write_bytes(b"\x01" * 4096)
    (bundle / "llm_api.yaml").write_text("max_batch_size: 8\n")
    return bundle, write_manifest(bundle, {"bundle_id": "k" * 64})


def test_local_store_copies_verifies_and_fetches(tmp_path: Path) -> None:
    bundle, manifest = _bundle(tmp_path)
    uri = store_bundle(bundle, manifest, bundle_location(str(tmp_path / "store"), "k" * 64, "run1"), None,
                       TransferSettings())
    assert uri == (tmp_path / "store" / ("k" * 64) / "run1").resolve().as_uri()
    assert not list((tmp_path / "store").rglob("*.partial*"))
    fetched = fetch_bundle(uri, tmp_path / "out", None, TransferSettings(), tracking_uri="sqlite:///unused.db")
    assert fetched["bundle_id"] == "k" * 64 and (tmp_path / "out" / "llm_api.yaml").is_file()
    # Storing again at the same place verifies what is there instead of copying.
    assert store_bundle(bundle, manifest, uri.removeprefix("file://"), None, TransferSettings()) == uri


def test_local_store_refuses_a_bundle_that_changed_since_its_manifest(tmp_path: Path) -> None:
    bundle, manifest = _bundle(tmp_path)
    (bundle / "llm_api.yaml").write_text("max_batch_size: 9\n")
    dest = bundle_location(str(tmp_path / "store"), "k" * 64, "run1")
    with pytest.raises(EnginewrightError, match="llm_api.yaml does not match its sha256"):
        store_bundle(bundle, manifest, dest, None, TransferSettings())
    assert not Path(dest).exists()


def test_fetch_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty"):
        fetch_bundle("s3://b/k", tmp_path / "out", None, TransferSettings(), tracking_uri="sqlite:///unused.db")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
