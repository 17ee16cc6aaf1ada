"""Where registered bundles' bytes live: an S3 prefix (production) or a local directory (the embedded default).

A bundle is stored at `<store>/<build key>/<run id>/`: grouped by what it is, unique per run, so two builds of
the same key racing each other never write into each other's objects. `manifest.json` is stored last, after
every other file verified: a prefix without it is an interrupted upload, and `pull` refuses it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from enginewright.bundle.manifest import MANIFEST_NAME, safe_relative_path, verify_bundle
from enginewright.bundle.s3 import (
    S3Location,
    TransferSettings,
    UploadItem,
    delete_prefix,
    download_prefix,
    s3_client,
    store_errors,
    upload_verified,
)
from enginewright.config.schemas import Manifest
from enginewright.errors import InputError
from enginewright.keys.atomic import written_whole
from enginewright.keys.hashing import sha256_file
from enginewright.ops.console import progress_bar
from enginewright.ops.disk import require_writable_dir


def bundle_location(store: str, build_key: str, run_id: str) -> str:
    return f"{store.rstrip('/')}/{build_key}/{run_id}"


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _local_path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def _progress(total: int, label: str) -> tqdm:
    return progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)


def store_bundle(bundle_dir: Path, manifest: Manifest, uri: str, endpoint_url: str | None,
                 transfer: TransferSettings) -> str:
    """Copy the bundle to `uri` and verify every stored file against the manifest; returns `uri`."""
    if not is_s3(uri):
        return _store_local(bundle_dir, _local_path(uri))
    target = S3Location.parse(uri)
    items = [UploadItem(bundle_dir / safe_relative_path(f["path"]), target.child(f["path"]), f["size"], f["sha256"])
             for f in manifest["files"]]
    manifest_path = bundle_dir / MANIFEST_NAME
    last = UploadItem(manifest_path, target.child(MANIFEST_NAME), manifest_path.stat().st_size,
                      sha256_file(manifest_path))
    client = s3_client(endpoint_url, transfer.concurrency, attempts=transfer.attempts)
    with store_errors(endpoint_url, f"store the bundle at {uri}"), \
            _progress(sum(i.size for i in items) + last.size, f"upload {target.uri}") as bar:
        for batch in (items, [last]):  # the manifest last, once the rest is verified
            upload_verified(client, batch, transfer, bar.update)
    return uri


def _store_local(bundle_dir: Path, dest: Path) -> str:
    if (dest / MANIFEST_NAME).is_file():
        verify_bundle(dest)
        return dest.resolve().as_uri()
    with written_whole(dest, folder=True) as partial:
        shutil.copytree(bundle_dir, partial, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True)
        verify_bundle(partial)
    return dest.resolve().as_uri()


def delete_bundle(uri: str, endpoint_url: str | None) -> None:
    if is_s3(uri):
        with store_errors(endpoint_url, f"delete {uri}"):
            delete_prefix(s3_client(endpoint_url), S3Location.parse(uri))
    else:
        shutil.rmtree(_local_path(uri), ignore_errors=True)


def require_empty_destination(dest: Path) -> None:
    """A bundle is only ever fetched into a new or empty directory."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"destination {str(dest)!r} is not empty; pass a new or empty directory")
    require_writable_dir(dest.parent, f"destination {str(dest)!r}:", "pass a new or empty directory you can write in")


def fetch_bundle(uri: str, dest: Path, endpoint_url: str | None, transfer: TransferSettings,
                 tracking_uri: str) -> Manifest:
    """Download the bundle at `uri` into `dest` (new or empty) and verify it; nothing is left at `dest` on failure.

    S3 bundles are downloaded in parallel; anything else (a local path, `runs:/`, `mlflow-artifacts:`) through
    MLflow's artifact repositories.
    """
    require_empty_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if is_s3(uri):
            client = s3_client(endpoint_url, transfer.concurrency, attempts=transfer.attempts)
            downloaded = staging / "bundle"
            downloaded.mkdir()
            with store_errors(endpoint_url, f"download {uri}"), \
                    _progress(None, f"download {uri}") as bar:  # type: ignore[arg-type]
                download_prefix(client, S3Location.parse(uri), downloaded, transfer,
                                accept=lambda key: Path(safe_relative_path(key)), progress=bar.update)
        else:
            from mlflow.artifacts import download_artifacts

            downloaded = Path(download_artifacts(artifact_uri=uri, dst_path=str(staging), tracking_uri=tracking_uri))
        manifest = verify_bundle(downloaded)
        if dest.exists():
            dest.rmdir()
        downloaded.rename(dest)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
