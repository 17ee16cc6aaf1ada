"""Where a checkpoint comes from, one backend per kind behind one small interface, used both by the build (resolve:
a local directory and an immutable revision) and by the watcher (the newest revision). A watched `s3://` prefix is
announced with exactly the revision its build then resolves. Adding a source is one backend in `BACKENDS`.

| kind | `model` looks like | revision | local directory |
|---|---|---|---|
| local | a path | `local:` + sha256 of the files' contents | the directory itself |
| s3 | `s3://bucket/prefix` | `s3:` + sha256 of the listing (keys, ETags, sizes) | downloaded once per revision |
| hub | `org/name` | the commit sha | the Hugging Face cache (tasks/sources.py) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from enginewright.bundle.manifest import safe_relative_path
from enginewright.bundle.s3 import S3Location, download_prefix, s3_client, store_errors
from enginewright.config.settings import Settings, TransferSettings
from enginewright.errors import CheckpointError, EnginewrightError
from enginewright.keys.atomic import written_whole
from enginewright.keys.hashing import sha256_json, sha256_tree


@dataclass(frozen=True)
class SourceContext:
    """What reaching a source needs besides its name (from Settings)."""

    hub_endpoint: str | None = None
    s3_endpoint_url: str | None = None
    cache_dir: Path = Path(".")  # where S3 checkpoints are downloaded, one folder per revision
    timeout_s: float = 10


class CheckpointBackend(Protocol):
    kind: str

    def matches(self, model: str) -> bool: ...

    def latest_revision(self, model: str, context: SourceContext) -> str: ...


def looks_like_local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists()


class LocalBackend:
    kind = "local"

    def matches(self, model: str) -> bool:
        return looks_like_local_path(model)

    def latest_revision(self, model: str, context: SourceContext) -> str:
        path = Path(model).expanduser()
        check_local_checkpoint(path, model)
        return "local:" + sha256_tree(path)


def check_local_checkpoint(path: Path, source: str) -> None:
    """A directory that cannot be a checkpoint has no revision: an unreadable or empty one would otherwise hash
    to the empty tree and be announced (and built) as a new revision."""
    if not path.is_dir():
        raise CheckpointError(f"watched source {source!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CheckpointError(f"watched source {source!r} cannot be read by this process")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"watched source {source!r} holds no config.json, so no checkpoint (yet)")


class S3Backend:
    kind = "s3"

    def matches(self, model: str) -> bool:
        return model.startswith("s3://")

    def listing(self, model: str, context: SourceContext) -> list[tuple[str, str, int]]:
        prefix = S3Location.parse(model)
        client = s3_client(context.s3_endpoint_url)
        found: list[tuple[str, str, int]] = []
        with store_errors(context.s3_endpoint_url, f"list {model}"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key + "/"):
                found += [(o["Key"], o["ETag"], o["Size"]) for o in page.get("Contents", [])]
        if not found:
            raise CheckpointError(f"source.model {model!r} holds no objects")
        return sorted(found)

    def latest_revision(self, model: str, context: SourceContext) -> str:
        return "s3:" + sha256_json(self.listing(model, context))

    def fetch(self, model: str, context: SourceContext) -> tuple[Path, str]:
        """The prefix's files in a local folder named by its revision (downloaded whole, or not at all)."""
        revision = self.latest_revision(model, context)
        folder = context.cache_dir / "s3" / revision.removeprefix("s3:")[:32]
        if not folder.is_dir():
            prefix = S3Location.parse(model)
            with written_whole(folder, folder=True) as tmp, store_errors(context.s3_endpoint_url, f"download {model}"):
                download_prefix(s3_client(context.s3_endpoint_url), prefix, tmp, TransferSettings(),
                                accept=lambda key: Path(safe_relative_path(key)))
        return folder, revision


class HubBackend:
    kind = "hub"

    def matches(self, model: str) -> bool:
        return True  # anything else is a Hub repo id

    def latest_revision(self, model: str, context: SourceContext) -> str:
        from huggingface_hub import HfApi

        # token=None: huggingface_hub reads HF_TOKEN itself, so the token never passes through our code or logs.
        sha = HfApi(endpoint=context.hub_endpoint).model_info(model, timeout=context.timeout_s).sha
        if sha is None:
            raise EnginewrightError(f"the Hub at {context.hub_endpoint or 'huggingface.co'} returned no commit sha "
                                    f"for {model}")
        return sha


BACKENDS: tuple[CheckpointBackend, ...] = (S3Backend(), LocalBackend(), HubBackend())  # first match wins


def backend_for(model: str) -> CheckpointBackend:
    return next(b for b in BACKENDS if b.matches(model))


def source_context(settings: Settings) -> SourceContext:
    return SourceContext(hub_endpoint=settings.hub_endpoint, s3_endpoint_url=settings.s3_endpoint_url,
                         cache_dir=settings.sources_dir, timeout_s=settings.watch_timeout_s)
