"""The build spec: what to build, validated at the edge. YAML files and CLI flags both end up here.

Every field carries its description, which is also the CLI's `--help` text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from enginewright.config.eval_tasks import EVAL_TASK_NAMES
from enginewright.config.formats import CPU_FORMATS, FORMAT_NAMES, FORMATS
from enginewright.config.settings import Settings
from enginewright.errors import InputError, describe_validation_error

QuantFormat = Literal[FORMAT_NAMES]  # type: ignore[valid-type]  # the rows of enginewright.config.formats
EvalTask = Literal[EVAL_TASK_NAMES]  # type: ignore[valid-type]  # the rows of enginewright.config.eval_tasks
DType = Literal["bfloat16", "float16", "float32"]


class StrictModel(BaseModel):
    """A typo in a spec is an error, not a silently ignored key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(StrictModel):
    model: str = Field(description="Hugging Face repo id (org/name) or a local checkpoint directory.")
    revision: str | None = Field(
        default=None,
        description="Hub branch, tag or commit to build. Resolved to an immutable commit sha. "
        "Local directories are identified by their content hash instead.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow a checkpoint whose config asks for custom Python code (auto_map)."
    )
    allow_pickle_weights: bool = Field(
        default=False, description="Allow pickle (.bin/.pt) weights when no safetensors are present."
    )


SearchMethod = Literal["gradient", "kl_div"]
AUTO_BITS_DEFAULT = 5.4


class AutoQuantizeSpec(StrictModel):
    """An AutoQuantize build (ModelOpt's `mtq.auto_quantize`): a format per layer group under a bits budget.

    The search (calibrating every candidate, scoring each layer group's sensitivity) runs once per source revision,
    calibration set, candidate formats, method, score size and layers kept unquantized; every budget is re-solved
    from its stored state (tasks/auto_quantize.py). lm_head is never searched: the formats' presets never quantize
    it, and TensorRT-LLM's LMHead takes no quantization config (tensorrt_llm/_torch/models/modeling_utils.py @
    000a01de66f0eab4ab05640711f0253f50f5209c, DecoderModelForCausalLM.__init__)."""

    formats: list[QuantFormat] = Field(
        default=["fp8", "int4_awq"], min_length=1,
        description="Candidate formats, one of which (or none: 16-bit) each layer group gets. On the CPU: "
        + ", ".join(n for n in CPU_FORMATS if FORMATS[n].auto_quantize) + "; on GPUs also the NVFP4/MX family.")
    effective_bits: float = Field(
        default=AUTO_BITS_DEFAULT, gt=0, le=16,
        description="The budget: average bits per weight of the searched layers (ModelOpt's effective bits: FP8 "
        "counts 8, INT4 4, lm_head and any layer left unquantized 16: enginewright/quant/effective_bits.py). A budget below "
        "what the candidates can reach on the model is refused before any work, naming the minimum.")
    method: SearchMethod = Field(
        default="gradient",
        description="How each layer group's sensitivity is scored: gradient (a backward pass of the language-"
        "modelling loss) or kl_div (the KL divergence of the quantized model's logits; no backward pass).")
    score_batches: int = Field(default=8, ge=1,
                               description="Calibration batches the sensitivity scores are computed over.")
    keep_unquantized: list[str] = Field(
        default_factory=list,
        description="Module name patterns (fnmatch, e.g. '*layers.0.*') the search leaves 16-bit, besides lm_head.")

    @field_validator("formats")
    @classmethod
    def _distinct(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError(f"names a format twice: {formats}")
        unsearchable = [f for f in formats if not FORMATS[f].auto_quantize]
        if unsearchable:
            raise ValueError(f"{', '.join(unsearchable)} cannot be an AutoQuantize candidate; candidates: "
                             + ", ".join(n for n in FORMAT_NAMES if FORMATS[n].auto_quantize))
        return formats


class QuantizationSpec(StrictModel):
    format: QuantFormat = Field(
        default="fp8",
        description="ModelOpt recipe: " + ", ".join(f"{n} ({FORMATS[n].description})" for n in CPU_FORMATS)
        + "; on GPUs also " + ", ".join(
            f"{n} (compute capability {FORMATS[n].calibrate_min_capability[0]}.{FORMATS[n].calibrate_min_capability[1]}+)"  # type: ignore[index]
            for n in FORMAT_NAMES if n not in CPU_FORMATS) + ".",
    )
    kv_cache: bool = Field(default=False, description="Also quantize the KV cache to FP8.")
    awq_block_size: int | None = Field(
        default=None,
        ge=16,
        description="Block size of INT4 weights for the AWQ formats. Unset: the largest of 128/64/32/16 "
        "that divides every quantized layer's input dimension.",
    )
    auto: AutoQuantizeSpec | None = Field(
        default=None,
        description="An AutoQuantize build instead of one format: a format per layer group under a bits budget "
        "(`format` is then unused and must stay unset).")

    @model_validator(mode="after")
    def _auto_alone(self) -> QuantizationSpec:
        if self.auto is not None and "format" in self.model_fields_set:
            raise ValueError("give quantization.format or quantization.auto, not both")
        if self.auto is not None and self.kv_cache:
            raise ValueError("quantization.kv_cache is not supported with quantization.auto (ModelOpt's search "
                             "scores weights and activations only)")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_format(self, handler: Any) -> dict[str, Any]:
        """An AutoQuantize spec is written without `format` (unused), so that what is written validates again; a
        one-format spec without `auto`, so that its build key is the one it had before AutoQuantize existed."""
        data = handler(self)
        data.pop("format" if self.auto is not None else "auto", None)
        return data

    @property
    def variant(self) -> str:
        """What this recipe is called in a matrix, a tag, a file name: the format, or auto-<budget>."""
        return self.format if self.auto is None else f"auto-{self.auto.effective_bits:g}"

    @property
    def candidate_formats(self) -> list[str]:
        """The formats this build may write: the one format, or the AutoQuantize candidates."""
        return [self.format] if self.auto is None else list(self.auto.formats)


class CalibrationSpec(StrictModel):
    source: str = Field(
        description="Calibration text: a local .txt/.jsonl file, a directory of them, or a Hugging Face "
        "dataset id."
    )
    num_samples: int = Field(default=32, ge=1, description="Number of calibration sequences.")
    seq_len: int = Field(default=256, ge=8, description="Tokens per calibration sequence.")
    seed: int = Field(default=0, ge=0, lt=2**63, description="Seed of the deterministic sampling of sequences.")
    batch_size: int | Literal["auto"] = Field(
        default="auto",
        description="Sequences per forward pass during calibration; auto: as many as fit in half the free GPU "
        "memory (at most 64), 8 on the CPU.",
    )

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if value != "auto" and int(value) < 1:
            raise ValueError("must be a positive integer or 'auto'")
        return value
    text_field: str = Field(default="text", description="Field holding the text in JSONL rows or dataset rows.")
    split: str = Field(default="train", description="Split of a Hugging Face dataset source.")


# The default main job, sized to decide (docs/gate.md, "The default main job"): FP8 SmolLM2 disagrees with its
# baseline on 3.7-5.6 % of documents; at 800 documents per task and a 3-point margin a harmless candidate passes
# all three tasks with 84 % power, in about 10 minutes on 2 cores.
LIMIT_DEFAULT = 800
LOOK_DEFAULT = 100
PLANNING_DISCORDANCE = 0.05
MAX_DROP_DEFAULT = 3.0


class EvaluationSpec(StrictModel):
    tasks: list[EvalTask] = Field(
        default=["arc_easy", "arc_challenge", "hellaswag"],
        min_length=1,
        description="lm-eval tasks, run with their stock definitions against local data copies.",
    )
    limit: int | None = Field(
        default=LIMIT_DEFAULT,
        ge=1,
        description="Documents planned per task: the first N of a seeded random order (MMLU stratified by "
        "subject), capped at the documents available. Unset: all local documents.",
    )
    look_size: int | None = Field(
        default=LOOK_DEFAULT,
        ge=1,
        description="Documents per task in each look of the sequential gate: a task stops as soon as its test "
        "decides. Unset: one look of `limit` documents (a fixed-n test).",
    )
    sample_seed: int = Field(default=0, ge=0, lt=2**63,
                             description="Seed of the random order of each task's documents.")
    logprob_dtype: Literal["model", "float32"] = Field(
        default="float32",
        description="dtype of lm-eval's log-softmax and of the summed log-likelihoods (HFLM softmax_dtype): "
        "float32 removes the ties that bf16 sums make between choices; `model` keeps the model's dtype.")
    num_fewshot: int = Field(default=0, ge=0, description="Few-shot examples per prompt.")
    batch_size: int = Field(default=8, ge=1, description="lm-eval batch size (baseline and candidate alike; it "
                            "changes log-likelihoods, so it is part of the baseline's key).")
    fold_weights: bool = Field(
        default=True,
        description="Evaluate the candidate with its weight quantizers folded into the weights "
        "(mtq.fold_weight): the same numbers, without fake-quantizing every weight on every forward pass.",
    )
    agreement_documents: int = Field(
        default=100, ge=1,
        description="Where TensorRT-LLM evaluates the candidate, the simulated candidate is evaluated too on the "
        "first N documents of each task, and the share on which both chose the same answer is reported.")
    runtime_agreement_min: float = Field(
        default=0.95, ge=0, le=1,
        description="Below this share of same answers between the TensorRT-LLM and the simulated candidate, "
        "the build warns and tags the version `runtime.agreement_low`.")
    data_dir: Path = Field(
        description="Offline evaluation data: <task>/<split>.jsonl files in the Hugging Face schemas "
        "(mmlu/{dev,test}, arc_easy|arc_challenge/{train,validation,test}, hellaswag/validation)."
    )

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[str]) -> list[str]:
        if len(set(tasks)) != len(tasks):
            raise ValueError("tasks must not repeat")
        return tasks


class RuntimeSpec(StrictModel):
    """TensorRT-LLM LLM-API options written to the bundle's llm_api.yaml (PyTorch backend)."""

    max_batch_size: int = Field(default=64, ge=1, description="Largest batch the runtime schedules.")
    max_num_tokens: int = Field(default=8192, ge=1, description="Largest number of tokens in one batch.")
    max_seq_len: int | None = Field(default=None, ge=1, description="Longest sequence; unset: the model's.")
    tensor_parallel_size: int = Field(default=1, ge=1, description="Tensor-parallel GPUs.")
    pipeline_parallel_size: int = Field(default=1, ge=1, description="Pipeline-parallel GPUs.")
    kv_cache_free_gpu_memory_fraction: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of free GPU memory given to the paged KV cache."
    )
    tokens_per_block: int = Field(default=32, ge=2, description="Tokens per paged KV-cache block (power of 2).")
    kv_cache_host_bytes: int = Field(default=0, ge=0, description="Host memory for KV-cache offload; 0: off.")
    enable_block_reuse: bool = Field(default=True, description="Reuse KV blocks across shared prefixes.")
    cuda_graphs: bool = Field(default=True, description="Capture CUDA graphs for decoding.")
    scheduler_policy: Literal["GUARANTEED_NO_EVICT", "MAX_UTILIZATION"] = Field(
        default="GUARANTEED_NO_EVICT", description="Capacity scheduler policy."
    )
    legacy_engine: bool = Field(
        default=False,
        description="Also build a TensorRT engine into bundle/engine (TensorRT-LLM <= 1.3.0rc20 only; the engine runs only "
        "on the GPU SM and TensorRT version it was built for, which then enter the build key).",
    )

    @field_validator("tokens_per_block")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"tokens_per_block must be a power of two, got {value}")
        return value


DEFAULT_SMOKE_PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Write one sentence about the ocean:",
    "The three primary colors are",
]


class TaskCriteria(StrictModel):
    max_drop_points: float | None = Field(
        default=None, ge=0, description="Largest accepted accuracy drop, in points (1.0 = one percentage point)."
    )
    min_recovery: float | None = Field(
        default=None, gt=0, le=1, description="Smallest accepted candidate/baseline accuracy ratio (0.99 = 99%)."
    )
    metric: Literal["acc", "acc_norm"] | None = Field(
        default=None, description="Metric compared; unset: acc_norm for ARC and HellaSwag, acc for MMLU."
    )


class GateSpec(StrictModel):
    """The accuracy gate: a paired comparison of candidate and baseline on the same documents."""

    max_drop_points: float | None = Field(
        default=MAX_DROP_DEFAULT, ge=0,
        description="Largest accepted accuracy drop per task, in points. Unset: not checked. The default suits the "
        "embedded main job's 800 documents per task; a 1-point margin needs about 4,000 per task (at 5 % "
        "discordance, 80 % power; docs/gate.md).")
    min_recovery: float | None = Field(
        default=None, gt=0, le=1, description="Smallest accepted candidate/baseline accuracy ratio per task."
    )
    tasks: dict[EvalTask, TaskCriteria] = Field(
        default_factory=dict, description="Per-task overrides of max_drop_points, min_recovery and metric."
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1,
        description="Two-sided confidence of the interval; the pass and the fail test are each one-sided at "
        "(1 - confidence)/2.")
    family_false_fail: float | None = Field(
        default=None, gt=0, lt=0.5,
        description="Bound on the chance that a harmless candidate fails any of the k tasks: each task's fail "
        "test at this / k (Bonferroni). Unset: each task's at (1 - confidence)/2, about k times that in all.")
    planning_discordance: float = Field(
        default=PLANNING_DISCORDANCE, gt=0, le=1,
        description="Expected share of documents on which baseline and candidate disagree, for the power "
        "figures of the preflight and --dry-run (measured for FP8 SmolLM2; see docs/gate.md).")
    smoke: bool = Field(
        default=True,
        description="Before the long evaluation, generate greedily on a few prompts; an empty or repetitive "
        "candidate (where the baseline is not) fails at once.",
    )
    smoke_prompts: list[str] = Field(default=DEFAULT_SMOKE_PROMPTS, min_length=1, description="Smoke-check prompts.")
    smoke_max_new_tokens: int = Field(default=24, ge=4, description="Tokens generated per smoke-check prompt.")

    @model_validator(mode="after")
    def _some_criterion(self) -> GateSpec:
        if self.max_drop_points is None and self.min_recovery is None:
            missing = [t for t in EVAL_TASK_NAMES if t not in self.tasks]
            if missing:
                raise ValueError("set gate.max_drop_points or gate.min_recovery (or both per task in gate.tasks)")
        return self

    def criteria_for(self, task: str) -> tuple[float | None, float | None]:
        """(max_drop_points, min_recovery) for `task`: its override where given, else the defaults."""
        override = self.tasks.get(task)
        if override is None:
            return self.max_drop_points, self.min_recovery
        fields = override.model_fields_set
        return (override.max_drop_points if "max_drop_points" in fields else self.max_drop_points,
                override.min_recovery if "min_recovery" in fields else self.min_recovery)


class RegistrySpec(StrictModel):
    model_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Registered model name in MLflow. Each build is a version of it.",
    )
    reevaluate: bool = Field(
        default=False,
        description="Re-judge a registered version: where this build key already has a version, its gate tags and "
        "`candidate` alias follow this build's verdict. Allowed only under the plan and margin the version was judged "
        "under (its tag gate.plan). Without it, a build of a registered key is recorded as a run of its own and the "
        "version's verdict stays as it is.",
    )


class BuildSpec(StrictModel):
    source: SourceSpec
    quantization: QuantizationSpec = QuantizationSpec()
    calibration: CalibrationSpec
    evaluation: EvaluationSpec
    runtime: RuntimeSpec = RuntimeSpec()
    gate: GateSpec = GateSpec()
    registry: RegistrySpec
    dtype: DType = Field(default="bfloat16", description="dtype the checkpoint is loaded in and exported as.")


AUTO_VARIANT_PREFIX = "auto-"


def variant_quantization(base: QuantizationSpec, variant: str) -> QuantizationSpec:
    """One matrix variant's recipe: a format (the base's other settings kept), or `auto-<bits>`, an AutoQuantize
    budget with the base's AutoQuantize settings (or the defaults). InputError for a bad name or combination."""
    raw: dict[str, Any] = base.model_dump(mode="json", exclude={"format", "auto"})
    if variant.startswith(AUTO_VARIANT_PREFIX):
        try:
            bits = float(variant.removeprefix(AUTO_VARIANT_PREFIX))
        except ValueError:
            raise InputError(f"matrix variant {variant!r}: expected auto-<bits>, e.g. auto-5.4") from None
        auto = base.auto.model_dump(mode="json") if base.auto is not None else {}
        raw["auto"] = auto | {"effective_bits": bits}
    else:
        raw["format"] = variant
    try:
        return QuantizationSpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, f"quantization of matrix variant {variant!r}")) from None


def with_auto_settings(base: QuantizationSpec, updates: dict[str, Any]) -> QuantizationSpec:
    """A matrix's base recipe with AutoQuantize settings (candidates, method) for its auto-<bits> variants; the base
    itself is never built, so it may name a format too."""
    current = base.auto.model_dump(mode="json") if base.auto is not None else {}
    try:
        auto = AutoQuantizeSpec.model_validate(current | updates)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, "quantization.auto")) from None
    return base.model_copy(update={"auto": auto})


def embedded_defaults(settings: Settings) -> dict[str, Any]:
    """The spec a bare `enginewright build` runs: SmolLM2-135M-Instruct, fp8, the shared offline data."""
    return {
        "source": {"model": str(settings.default_model_dir)},
        "calibration": {"source": str(settings.shared_data_dir / "calib" / "wikitext2_train.txt")},
        "evaluation": {"data_dir": str(settings.shared_data_dir / "eval")},
    }


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_model_name(model: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct` or `/x/SmolLM2-135M-Instruct/` → `SmolLM2-135M-Instruct`."""
    return Path(model.rstrip("/")).name or "model"


def _resolve_relative_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Paths written in a spec file are relative to that file, as in any config that names files."""
    raw = deep_merge({}, raw)
    for section, key in (("source", "model"), ("calibration", "source"), ("evaluation", "data_dir")):
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and value.startswith(("./", "../")):
            raw[section][key] = str((base_dir / value).resolve())
    return raw


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: Path, what: str, missing_hint: str, holds: str) -> dict[str, Any]:
    """A YAML file holding a mapping (a build spec, a deploy target); one InputError line naming `what` else."""
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist; {missing_hint}")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise InputError(f"{what} {str(path)!r} is not valid YAML{at}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{what} {str(path)!r} must hold a mapping of {holds}, got {type(raw).__name__}")
    return raw


def read_spec_file(path: Path) -> dict[str, Any]:
    raw = read_yaml_mapping(path, "spec file", "pass a YAML build spec (see specs/)", "sections")
    return _resolve_relative_paths(raw, path.parent)


def build_spec(
    settings: Settings, spec_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> BuildSpec:
    """Embedded defaults ← spec file ← CLI overrides, validated once."""
    raw = embedded_defaults(settings)
    if spec_file is not None:
        raw = deep_merge(raw, read_spec_file(spec_file))
    raw = deep_merge(raw, overrides or {})
    raw.setdefault("registry", {})
    if isinstance(raw["registry"], dict) and "model_name" not in raw["registry"]:
        model = raw.get("source", {}).get("model", "") if isinstance(raw.get("source"), dict) else ""
        raw["registry"]["model_name"] = default_model_name(str(model))
    try:
        spec = BuildSpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc)) from None
    if spec.source.trust_remote_code and spec.source.model not in settings.trust_remote_code_allow:
        raise InputError(f"source.trust_remote_code is true for {spec.source.model!r}, which is not in "
                         f"ENGINEWRIGHT_TRUST_REMOTE_CODE_ALLOW ({', '.join(settings.trust_remote_code_allow) or 'empty'}); "
                         "add the repository there only if you trust its code")
    return spec
