"""The newest revision of a watched checkpoint: a Hub commit sha, a hash of an S3 prefix's listing, or the
content hash of a local directory. One GET per Hub repo (`HfApi.model_info`), one listing per S3 prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from enginewright.bundle.s3 import S3Location
from enginewright.config.settings import Settings
from enginewright.config.spec import BuildSpec, build_spec, deep_merge, read_spec_file
from enginewright.errors import CheckpointError, InputError
from tasks.checkpoint_sources import SourceContext, backend_for, check_local_checkpoint, looks_like_local_path


def latest_revision(source: str, hub_endpoint: str | None, s3_endpoint: str | None, timeout_s: float = 10) -> str:
    """The newest revision of a watched source, by its backend (tasks/checkpoint_sources.py)."""
    context = SourceContext(hub_endpoint=hub_endpoint, s3_endpoint_url=s3_endpoint, timeout_s=timeout_s)
    return backend_for(source).latest_revision(source, context)


def watch_source(source: str) -> str:
    """What `watch add` stores: a Hub id or s3:// prefix as given, a local directory as an absolute path of an
    existing checkpoint (a relative path would mean something else on the worker that polls it)."""
    if source.startswith("s3://"):
        S3Location.parse(source)
        return source.rstrip("/")
    if looks_like_local_path(source):
        path = Path(source).expanduser().resolve()
        try:
            check_local_checkpoint(path, source)
        except CheckpointError as exc:
            raise InputError(f"{exc}; watch a checkpoint directory (with config.json), a Hub repo id or an "
                             "s3:// prefix") from None
        return str(path)
    return source


def watched_spec_yaml(spec_file: Path) -> str:
    """The spec a watch keeps: the file's mapping with its relative paths resolved, as canonical YAML."""
    return yaml.safe_dump(read_spec_file(spec_file), sort_keys=True)


def revision_spec(settings: Settings, spec_yaml: str, source: str | None, revision: str | None) -> BuildSpec:
    """The spec of a watched revision: the stored spec, its source pinned to the announced revision (a Hub commit
    sha; local and S3 sources are identified by content again when the build resolves them). Empty: the
    embedded default build."""
    raw = yaml.safe_load(spec_yaml) if spec_yaml.strip() else {}
    if not isinstance(raw, dict):
        raise InputError(f"the watched spec must be a mapping of sections, got {type(raw).__name__}")
    overrides: dict[str, Any] = {}
    if source is not None:
        overrides["model"] = source
        if revision is not None and not revision.startswith(("local:", "s3:")):
            overrides["revision"] = revision
    return build_spec(settings, None, deep_merge(raw, {"source": overrides} if overrides else {}))
