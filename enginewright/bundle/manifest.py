"""Write and verify a bundle's manifest.json (schema: enginewright.config.schemas.Manifest)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from enginewright.config.schemas import MANIFEST_SCHEMA_VERSION, Manifest, ManifestFile
from enginewright.errors import BundleVerificationError
from enginewright.keys.atomic import written_whole
from enginewright.keys.hashing import list_files, sha256_file

MANIFEST_NAME = "manifest.json"
PARTIAL_PREFIX = MANIFEST_NAME + ".partial"  # atomic.written_whole's temporary copy of it


def file_entries(bundle_dir: Path) -> list[ManifestFile]:
    return [
        ManifestFile(path=p.relative_to(bundle_dir).as_posix(), size=p.stat().st_size, sha256=sha256_file(p))
        for p in list_files(bundle_dir)
        if p.name != MANIFEST_NAME and not p.name.startswith(PARTIAL_PREFIX)
    ]


def write_manifest(bundle_dir: Path, fields: dict[str, Any]) -> Manifest:
    manifest: Manifest = {"schema_version": MANIFEST_SCHEMA_VERSION, **fields, "files": file_entries(bundle_dir)}  # type: ignore[typeddict-item]
    with written_whole(bundle_dir / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def bundle_bytes(manifest: Manifest) -> int:
    """The bundle's size: the sum of its listed files (the checkpoint dominates)."""
    return sum(entry["size"] for entry in manifest["files"])


def safe_relative_path(path: str) -> PurePosixPath:
    """A manifest path must stay inside the bundle: relative, no '..', no backslashes."""
    candidate = PurePosixPath(path)
    if not path or candidate.is_absolute() or ".." in candidate.parts or "\\" in path:
        raise BundleVerificationError(f"manifest path {path!r} escapes the bundle directory; refusing it")
    return candidate


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Every listed file present with its size and sha256, and no unlisted file. Raises on the first problem."""
    manifest_file = bundle_dir / MANIFEST_NAME
    if not manifest_file.is_file():
        raise BundleVerificationError(f"{bundle_dir} has no {MANIFEST_NAME}; not a bundle or an incomplete download")
    manifest: Manifest = json.loads(manifest_file.read_text())
    listed = set()
    for entry in manifest["files"]:
        rel = safe_relative_path(entry["path"])
        listed.add(rel.as_posix())
        path = bundle_dir / rel
        if not path.is_file():
            raise BundleVerificationError(f"bundle file {rel} is missing from {bundle_dir}")
        if path.stat().st_size != entry["size"]:
            raise BundleVerificationError(f"bundle file {rel} has {path.stat().st_size} bytes, manifest says {entry['size']}")
        if sha256_file(path) != entry["sha256"]:
            raise BundleVerificationError(f"bundle file {rel} does not match its sha256 in the manifest")
    extra = {p.relative_to(bundle_dir).as_posix() for p in list_files(bundle_dir)} - listed - {MANIFEST_NAME}
    if extra:
        raise BundleVerificationError(f"bundle has files not in its manifest: {sorted(extra)[:5]}")
    return manifest
