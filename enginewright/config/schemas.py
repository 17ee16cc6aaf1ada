"""The JSON documents enginewright writes, described in one place (as lm-eval's result_schema.py does).

`manifest.json` is the bundle's table of contents; every consumer (pull, deploy) verifies against it.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required, TypedDict

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
    effective_bits: float | None  # average bits per weight of the layers the formats may quantize (ModelOpt's)
    mix: dict[str, Any] | None  # AutoQuantize: budget, effective_bits, groups (first module → format), candidates


class CalibrationDoc(TypedDict):
    num_samples: int
    seq_len: int
    seed: int
    source_fingerprint: str  # sha256 of the calibration text
    tokens_sha256: str  # of the sampled token ids


class EngineLane(TypedDict, total=False):
    """The TensorRT-LLM step's result (tasks/trtllm_build.py), the manifest's `engine`: "skipped" with the reason, or
    what loaded, generated, was benchmarked and (legacy lane) built on this GPU worker."""

    status: Required[Literal["skipped", "available", "loaded", "built"]]
    reason: str  # why it was skipped
    tensorrt_llm: str  # the version that loaded the bundle
    load_seconds: float
    warmup_seconds: float
    generate_seconds: float
    generate_tokens_per_second: float
    smoke_degenerate: str  # "<n> of <prompts>"
    smoke_texts: list[str]
    # trtllm-bench's throughput figures by report path, e.g. "performance.system_output_throughput_tok_s"
    bench: dict[str, float]
    compute_capability: str  # of the GPU a legacy engine was built on
    tensorrt: str  # the TensorRT a legacy engine was built with


class Manifest(TypedDict):
    schema_version: int  # MANIFEST_SCHEMA_VERSION
    bundle_id: str  # == build_key.digest
    build_key: BuildKeyDoc
    source: SourceDoc
    quantization: QuantizationDoc
    calibration: CalibrationDoc
    environment: dict[str, str]  # python, platform, torch, transformers, modelopt, lm_eval, cuda, gpu, ...
    engine: EngineLane  # the TensorRT-LLM step's result
    export_verification: dict[str, float]  # tensors, scales, config_fields compared; codes_differing (share)
    memory_plan: NotRequired[dict[str, Any]]  # {"quantize", "export"}: enginewright.quant.memory_plan.MemoryPlan of each step
    golden: NotRequired[str]  # sha256 of golden/ (enginewright.serving.golden): what a deployed release is compared with
    files: list[ManifestFile]  # every file of the bundle except manifest.json itself


GATE_REPORT_SCHEMA_VERSION = 4  # 3: candidate_runtime; 4: clustered_by, clusters, design_effect
Verdict = str  # "pass" | "fail" | "inconclusive"


class GateTaskResult(TypedDict):
    task: str  # mmlu | arc_easy | arc_challenge | hellaswag (MMLU's 57 subjects pooled)
    metric: str  # acc or acc_norm: per-document 0/1 correctness compared
    n: int  # documents judged: the first n of the task's seeded order, paired by (lm-eval task, doc_id)
    documents_planned: int  # the plan's last look
    documents_available: int  # in the local data
    look: int  # the look that decided (or the last one evaluated)
    looks_planned: int
    baseline: float  # accuracy, fraction
    candidate: float
    difference_points: float  # 100 × (candidate - baseline)
    ci_low_points: float  # repeated confidence interval of the difference at this look (Tango's score), points
    ci_high_points: float
    z: float  # Tango's score statistic at Δ = -allowed drop
    pass_bound: float  # pass when z ≥ pass_bound (O'Brien–Fleming spending at this look)
    fail_bound: float  # fail when z (continuity-corrected) ≤ -fail_bound
    p_noninferiority: float  # nominal one-sided p of "the drop exceeds the allowed one" at this look
    alpha_at_look: float  # the nominal level the pass bound stands for: pass when p_noninferiority ≤ it
    only_baseline_right: int  # discordant pairs
    only_candidate_right: int
    mcnemar_p: float  # exact two-sided McNemar test of *any* difference: a description; nothing decides by it
    recovery: float | None  # candidate / baseline; None when the baseline scores 0
    allowed_drop_points: float  # the threshold: the stricter of max_drop_points and (1 - min_recovery) × baseline
    verdict: Verdict  # pass: the drop is shown smaller than allowed; fail: shown larger; inconclusive: neither
    documents_needed: int  # for 80 % power to pass a harmless candidate at this margin and discordance
    tie_rate_baseline: float  # share of documents whose top choice ties another exactly in log-likelihood
    tie_rate_candidate: float
    clustered_by: NotRequired[str | None]  # the field whose equal values are one cluster (HellaSwag: source_id)
    clusters: NotRequired[int | None]  # clusters behind n
    design_effect: NotRequired[float]  # the variance the statistic used, over Tango's independent one (≥ 1)


class GateReport(TypedDict):
    schema_version: int  # GATE_REPORT_SCHEMA_VERSION
    overall: Verdict  # fail if any task fails, else inconclusive if any is, else pass
    method: str  # the test and the stopping rule, in words
    confidence: float
    alpha_pass: float  # each task's pass test
    alpha_fail: float  # each task's fail test
    sample_seed: int  # seed of the document order (enginewright.tasks.eval_data.document_order)
    look_size: int | None
    tasks: list[GateTaskResult]
    message: str  # one line naming the deciding task, its drop and threshold
    candidate_runtime: CandidateRuntimeDoc


class AgreementDoc(TypedDict):
    n: int  # documents both the runtime and the simulated candidate evaluated
    same: int  # of which both chose the same answer (highest log-likelihood)
    share: float


class CandidateRuntimeDoc(TypedDict):
    runtime: str  # simulated | tensorrt_llm (tasks.runtimes)
    reason: str  # why this runtime evaluated the candidate, or why the runtime evaluation was skipped
    version: str | None  # TensorRT-LLM's version where it ran
    agreement: dict[str, AgreementDoc] | None  # per task; None where only the simulated candidate was evaluated
    agreement_min: float  # evaluation.runtime_agreement_min
    agreement_low: list[str]  # tasks whose share is below agreement_min


class SmokeResult(TypedDict):
    verdict: Verdict  # pass | fail | not-informative (the baseline itself is degenerate)
    prompts: list[str]
    baseline: list[str]  # greedy continuations
    candidate: list[str]
    degenerate: list[bool]  # candidate continuation empty or repetitive, per prompt
    reason: str





class BuildReport(TypedDict):
    """A registered build's outcome for programs (`build --report-json`, the `build-report` artifact of a build
    deployment's run; tasks/variants.py::build_report): what the matrix compares."""

    status: Literal["registered"]
    build_key: str
    model_name: str
    version: str
    aliases: list[str]
    source: str  # the bundle's URI
    run_id: str
    registered_now: bool
    version_verdict: Verdict  # the verdict the version stands on (a re-evaluation leaves it unchanged)
    evaluated_again: str | None  # the note of a re-evaluation under another plan, else None
    evaluation_run_id: str
    bundle_bytes: int
    gate: GateReport
    engine: EngineLane
    effective_bits: float | None
    mix: dict[str, Any] | None
    candidate_docs_per_second: float
    baseline_seconds: float  # 0 when every task came from the baseline store


class FailedBuildReport(TypedDict):
    """A build that registered nothing (tasks/variants.py::failure_report): written and published like BuildReport."""

    status: Literal["gate failed", "refused", "failed"]
    exit_code: int  # 1 failed or gate failed, 2 refused (bad input)
    error: str  # the one-line error
