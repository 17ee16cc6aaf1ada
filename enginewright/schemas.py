"""The JSON documents enginewright writes, described in one place (as lm-eval's result_schema.py does).

`manifest.json` is the bundle's table of contents; every consumer (pull, deploy) verifies against it.
"""

from __future__ import annotations

from typing import TypedDict

MANIFEST_SCHEMA_VERSION = 1


class ManifestFile(TypedDict):
    path: str  # relative to the bundle root, '/'-separated, never absolute or containing '..'
    size: int  # bytes
    sha256: str  # hex digest of the file's bytes


class BuildKeyDoc(TypedDict):
    digest: str  # sha256 over `parts` (canonical JSON): the bundle id and every step's cache key
    parts: dict[str, str]  # named parts: source, recipe, calibration_data, tools


class Manifest(TypedDict):
    schema_version: int  # MANIFEST_SCHEMA_VERSION
    bundle_id: str  # == build_key.digest
    build_key: BuildKeyDoc
    source: dict[str, str | None]  # kind, model, repo_id, revision
    quantization: dict[str, object]  # format, kv_cache, modelopt recipe, awq block size, exported quant_algo
    calibration: dict[str, object]  # num_samples, seq_len, seed, source fingerprint, token ids sha256
    environment: dict[str, str]  # python, platform, torch, transformers, modelopt, lm_eval, cuda, gpu, ...
    engine: dict[str, str]  # status of the TensorRT-LLM engine lane: "skipped" + reason, or what was built
    files: list[ManifestFile]  # every file of the bundle except manifest.json itself
