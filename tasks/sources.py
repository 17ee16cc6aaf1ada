"""Resolve a checkpoint source to an immutable identity and a local directory, refusing unsafe checkpoints."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from enginewright.config.spec import SourceSpec
from enginewright.errors import CheckpointError
from enginewright.keys.cache_policies import ChangeDetector
from enginewright.keys.hashing import sha256_tree, stat_fingerprint
from enginewright.ops.retries import retry_unless_input_error
from tasks.checkpoint_sources import S3Backend, SourceContext, looks_like_local_path

SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class ResolvedSource:
    kind: str  # "local", "s3" or "hub"
    model: str  # what the spec said
    path: Path  # a local directory holding the checkpoint files
    revision: str  # hub commit sha, or sha256 of a local directory's contents
    repo_id: str | None = None

    @property
    def identity(self) -> str:
        """What the build key uses: content, not location, for local directories."""
        return f"hub:{self.repo_id}@{self.revision}" if self.kind == "hub" else f"{self.kind}:{self.revision}"

    def cache_identity(self) -> str:
        return self.identity


def check_checkpoint_dir(path: Path, spec: SourceSpec) -> None:
    """The checks that need no hashing: readable config, no remote code, safe weights, a tokenizer."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no config.json; expected a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"checkpoint {str(path)!r}: config.json has no 'model_type'")
    if "auto_map" not in config:
        check_model_type(path, str(config["model_type"]))
    if "auto_map" in config and not spec.trust_remote_code:
        raise CheckpointError(
            f"checkpoint {str(path)!r} needs custom code (config.json auto_map); "
            "set source.trust_remote_code: true only for a repository you trust"
        )
    safetensors = [p for pattern in SAFE_WEIGHTS for p in path.glob(pattern)]
    pickles = [p for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)]
    if not safetensors:
        if pickles and not spec.allow_pickle_weights:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has only pickle weights ({pickles[0].name}); convert to safetensors "
                "or set source.allow_pickle_weights: true"
            )
        if not pickles:
            raise CheckpointError(f"checkpoint {str(path)!r} has no weights (*.safetensors)")
    for weights in safetensors:
        _check_safetensors_header(weights)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise CheckpointError(f"checkpoint {str(path)!r} has no tokenizer (tokenizer.json / tokenizer_config.json)")


def check_model_type(path: Path, model_type: str) -> None:
    """A model_type transformers' AutoModelForCausalLM cannot build fails here, not after the checkpoint is hashed
    (it passed the whole preflight before)."""
    from enginewright.keys.environment import package_version
    from enginewright.quant.models import causal_lm_model_types

    known = causal_lm_model_types()
    if model_type not in known:
        close = sorted(t for t in known if t[:3] == model_type[:3])[:5]
        raise CheckpointError(
            f"checkpoint {str(path)!r}: config.json model_type {model_type!r} is not a causal language model "
            f"transformers {package_version('transformers')} can load"
            + (f" (close: {', '.join(close)})" if close else " (for example llama, mistral, qwen2, gemma2)"))


def _check_safetensors_header(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:  # only the header: no torch needed
            handle.keys()
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"checkpoint weights {str(path)!r} are unreadable: {exc}") from None


def locate_source(spec: SourceSpec, context: SourceContext) -> tuple[str, Path, str | None]:
    """(kind, local directory, immutable revision or None for a local directory, which is hashed), downloading
    from the Hub or S3 where needed (tasks/checkpoint_sources.py)."""
    if S3Backend().matches(spec.model):
        if spec.revision is not None:
            raise CheckpointError(f"source.revision {spec.revision!r} was given for S3 prefix {spec.model!r}; S3 "
                                  "prefixes are identified by their listing, leave revision unset")
        path, revision = S3Backend().fetch(spec.model, context)
        return "s3", path, revision.removeprefix("s3:")
    if looks_like_local_path(spec.model):
        path = Path(spec.model).expanduser()
        if not path.is_dir():
            raise CheckpointError(
                f"source.model {spec.model!r} is not a directory; pass a local checkpoint directory or a "
                "Hugging Face repo id (org/name)"
            )
        if spec.revision is not None:
            raise CheckpointError(
                f"source.revision {spec.revision!r} was given for local directory {spec.model!r}; local "
                "directories are identified by content hash, leave revision unset"
            )
        return "local", path.resolve(), None
    return ("hub", *_download_from_hub(spec))


def _download_from_hub(spec: SourceSpec) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = HUB_ALLOW_PATTERNS + (list(PICKLE_WEIGHTS) if spec.allow_pickle_weights else [])
    try:
        path = Path(
            snapshot_download(
                spec.model,
                revision=spec.revision,
                allow_patterns=patterns,
                local_files_only=os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True"),
            )
        )
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"source.model {spec.model!r} (revision {spec.revision or 'main'!r}) is not in the local Hugging "
            "Face cache and HF_HUB_OFFLINE is set; pass a local directory or allow Hub access"
        ) from None
    except (HfHubHTTPError, ValueError) as exc:
        raise CheckpointError(f"source.model {spec.model!r}: {str(exc).splitlines()[0]}") from None
    return path, path.name  # snapshot directories are named by commit sha


def resolve_source(spec: SourceSpec, context: SourceContext = SourceContext()) -> ResolvedSource:  # noqa: B008
    kind, path, sha = locate_source(spec, context)
    check_checkpoint_dir(path, spec)
    revision = sha if sha is not None else sha256_tree(path)
    return ResolvedSource(kind=kind, model=spec.model, path=path, revision=revision,
                          repo_id=spec.model if kind == "hub" else None)



def _resolve_change(inputs: dict[str, Any]) -> Any:
    """Local dirs: re-hash only when a file's size or mtime changed. Hub: cache only pinned commit shas. S3: never
    (its listing is the revision, read on every run)."""
    spec: SourceSpec = inputs["spec"]
    if S3Backend().matches(spec.model):
        return None
    if looks_like_local_path(spec.model):
        path = Path(spec.model).expanduser()
        return [spec.model_dump(), stat_fingerprint(path)] if path.is_dir() else None
    is_commit = spec.revision is not None and len(spec.revision) == 40
    return spec.model_dump() if is_commit else None


resolve_task = task(
    name="resolve", cache_policy=ChangeDetector(step="resolve", key_fn=_resolve_change), persist_result=True,
    retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_input_error,
)(resolve_source)
