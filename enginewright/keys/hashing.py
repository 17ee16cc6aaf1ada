"""sha256 helpers shared by the manifest, the source resolver and the data fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hash of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def list_files(root: Path) -> list[Path]:
    """Regular files under `root`, sorted, skipping hidden entries (.cache, .git, ...)."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def sha256_tree(root: Path) -> str:
    """Content hash of a directory: its files' relative paths and contents, independent of where it lives."""
    return sha256_json({str(p.relative_to(root)): sha256_file(p) for p in list_files(root)})


def stat_fingerprint(root: Path) -> str:
    """Cheap change detector (paths, sizes, mtimes): the cache key of a content hash."""
    if root.is_file():
        stat = root.stat()
        return sha256_json([str(root.resolve()), stat.st_size, stat.st_mtime_ns])
    return sha256_json(
        [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in list_files(root)]
        + [str(root.resolve())]
    )
