"""`enginewright pull models:/<name>@<alias> DIR`: download a registered bundle and verify it before use.

The bundle is downloaded into a temporary directory beside DIR, checked against its manifest (every file's
size and sha256, no file missing or extra, no path escaping the directory), and only then renamed to DIR.
A corrupted or incomplete download leaves nothing at DIR.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from enginewright.errors import EnginewrightError, InputError
from enginewright.manifest import verify_bundle
from enginewright.schemas import Manifest

MODEL_URI = re.compile(r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    match = MODEL_URI.match(uri)
    if match is None:
        raise InputError(f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def pull_bundle(uri: str, dest: Path, tracking_uri: str) -> tuple[str, Manifest]:
    """Download and verify; returns the version number and the verified manifest."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias, version = parse_model_uri(uri)
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"destination {str(dest)!r} is not empty; pass a new or empty directory")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise InputError(f"{uri}: {exc.message}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        downloaded = Path(download_artifacts(artifact_uri=found.source, dst_path=str(staging),
                                             tracking_uri=tracking_uri))
        try:
            manifest = verify_bundle(downloaded)
        except EnginewrightError as exc:
            raise EnginewrightError(f"{uri} (version {found.version}) failed verification: {exc}") from None
        if dest.exists():
            dest.rmdir()
        downloaded.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(found.version), manifest
