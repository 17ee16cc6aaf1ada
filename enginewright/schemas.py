"""The JSON documents enginewright writes, described in one place (as lm-eval's result_schema.py does).

`manifest.json` is the bundle's table of contents; every consumer (pull, deploy) verifies against it.
"""

from __future__ import annotations

from typing import Any, TypedDict

MANIFEST_SCHEMA_VERSION = 1


class ManifestFile(TypedDict):
    path: str  # relative to the bundle root, '/'-separated, never absolute or containing '..'
    size: int  # bytes
    sha256: str  # hex digest of the file's bytes


class BuildKeyDoc(TypedDict):
    digest: str  # sha256 over `parts` (canonical JSON): the bundle id and every step's cache key
    parts: dict[str, str]  # named parts: source, recipe, calibration_data, tools


class SourceDoc(TypedDict):
    kind: str  # local | hub
    model: str  # what the spec said
    repo_id: str | None
    revision: str  # hub commit sha, or sha256 of a local directory's contents


class QuantizationDoc(TypedDict):
    format: str  # our format name (fp8, int4_awq, ...)
    kv_cache: bool  # FP8 KV cache requested
    recipe: str  # ModelOpt preset name
    awq_block_size: int | None
    quant_algo: str | None  # what the export wrote into hf_quant_config.json
    kv_cache_quant_algo: str | None


class CalibrationDoc(TypedDict):
    num_samples: int
    seq_len: int
    seed: int
    source_fingerprint: str  # sha256 of the calibration text
    tokens_sha256: str  # of the sampled token ids


class Manifest(TypedDict):
    schema_version: int  # MANIFEST_SCHEMA_VERSION
    bundle_id: str  # == build_key.digest
    build_key: BuildKeyDoc
    source: SourceDoc
    quantization: QuantizationDoc
    calibration: CalibrationDoc
    environment: dict[str, str]  # python, platform, torch, transformers, modelopt, lm_eval, cuda, gpu, ...
    engine: dict[str, Any]  # status of the TensorRT-LLM engine lane: "skipped" + reason, or what was built
    export_verification: dict[str, float]  # tensors, scales, config_fields compared; codes_differing (share)
    files: list[ManifestFile]  # every file of the bundle except manifest.json itself


GATE_REPORT_SCHEMA_VERSION = 1
Verdict = str  # "pass" | "fail" | "inconclusive"


class GateTaskResult(TypedDict):
    task: str  # mmlu | arc_easy | arc_challenge | hellaswag (MMLU's 57 subjects pooled)
    metric: str  # acc or acc_norm: per-document 0/1 correctness compared
    n: int  # documents joined by (lm-eval task, doc_id) with equal doc and prompt hashes
    baseline: float  # accuracy, fraction
    candidate: float
    difference_points: float  # 100 × (candidate - baseline)
    ci_low_points: float  # paired-bootstrap interval of the difference, points
    ci_high_points: float
    only_baseline_right: int  # discordant pairs
    only_candidate_right: int
    mcnemar_p: float  # exact two-sided McNemar test (no difference at all)
    recovery: float | None  # candidate / baseline; None when the baseline scores 0
    allowed_drop_points: float  # the threshold: the stricter of max_drop_points and (1 - min_recovery) × baseline
    verdict: Verdict  # pass: interval above -allowed; fail: interval below; inconclusive: straddles it
    samples_to_decide: int | None  # inconclusive only: rough number of documents that would decide it


class SmokeResult(TypedDict):
    verdict: Verdict  # pass | fail | not-informative (the baseline itself is degenerate)
    prompts: list[str]
    baseline: list[str]  # greedy continuations
    candidate: list[str]
    degenerate: list[bool]  # candidate continuation empty or repetitive, per prompt
    reason: str


class GateReport(TypedDict):
    schema_version: int  # GATE_REPORT_SCHEMA_VERSION
    overall: Verdict  # fail if any task fails, else inconclusive if any is, else pass
    confidence: float
    bootstrap_iterations: int
    seed: int
    tasks: list[GateTaskResult]
    message: str  # one line naming the deciding task, its drop and threshold
