"""`enginewright pull models:/<name>@<alias> DIR`: download a registered bundle and verify it before use.

The bundle is downloaded (S3: in parallel, straight from the store) into a temporary directory beside DIR,
checked against its manifest (every file's size and sha256, no file missing or extra, no path escaping the
directory), and only then renamed to DIR. A corrupted or incomplete download leaves nothing at DIR.
"""

from __future__ import annotations

import re
from pathlib import Path

from enginewright.bundle.bundle_store import fetch_bundle, require_empty_destination
from enginewright.config.schemas import Manifest
from enginewright.config.settings import Settings
from enginewright.errors import EnginewrightError, InputError, StoreError

MODEL_URI = re.compile(r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    match = MODEL_URI.match(uri)
    if match is None:
        raise InputError(f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def pull_bundle(uri: str, dest: Path, settings: Settings) -> tuple[str, Manifest]:
    """Download and verify; returns the version number and the verified manifest."""
    from mlflow.exceptions import MlflowException

    from enginewright.registry.registry_client import registry_client

    name, alias, version = parse_model_uri(uri)
    require_empty_destination(dest)  # before asking MLflow anything
    client = registry_client(settings.tracking_uri)
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise InputError(f"{uri}: {exc.message}") from None
    try:
        manifest = fetch_bundle(str(found.source), dest, settings.s3_endpoint_url, settings.transfer, settings.tracking_uri)
    except StoreError as exc:  # the store, not the bundle, failed
        raise StoreError(f"{uri} (version {found.version}): {exc}") from None
    except EnginewrightError as exc:
        if isinstance(exc, InputError):
            raise
        raise EnginewrightError(f"{uri} (version {found.version}) failed verification: {exc}") from None
    return str(found.version), manifest
