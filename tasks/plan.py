"""Plan a build: its build key and work directory, and why a known spec's key moved since its last build."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enginewright.config.spec import BuildSpec
from enginewright.gate.gate_decision import task_plan
from enginewright.keys.atomic import written_whole
from enginewright.keys.build_key import BuildKey, compute_build_key
from enginewright.keys.environment import key_tool_versions
from enginewright.keys.work_dir import WorkDir
from enginewright.quant.memory_plan import (
    MemoryPlan,
    choose_plan,
    estimate_need,
    probe_worker,
    read_footprint,
)
from tasks.eval_data import EvalData, document_count


@dataclass(frozen=True)
class BuildPlan:
    key: BuildKey
    work: WorkDir
    changed_since_last: list[str] | None  # build-key parts that differ from this spec's last build; None: first


def last_key_file(builds_dir: Path, spec: BuildSpec) -> Path:
    """Where the last build key of this model and format is kept (a 'known spec')."""
    return builds_dir / "last-keys" / f"{spec.registry.model_name}.{spec.quantization.variant}.json"


def plan_build(spec: BuildSpec, source_identity: str, calibration_fingerprint: str, builds_dir: Path,
               log: Callable[[str], None]) -> BuildPlan:
    """The build key and its work directory; logs the key, and on a known spec which key parts moved.
    Never cached: the work directory's incarnation must be read fresh on every run."""
    key = compute_build_key(source_identity, spec, calibration_fingerprint,
                            key_tool_versions(engine_target=spec.runtime.legacy_engine))
    record = last_key_file(builds_dir, spec)
    changed = None
    if record.is_file():
        changed = key.differences(BuildKey(parts=json.loads(record.read_text())))
    with written_whole(record) as tmp:
        tmp.write_text(json.dumps(key.parts, indent=2, sort_keys=True))
    plan = BuildPlan(key=key, work=WorkDir.open(builds_dir, key.digest), changed_since_last=changed)
    log(f"build key {key.digest} (work dir {plan.work.path})")
    if changed:
        log(f"the build key of {spec.registry.model_name} {spec.quantization.variant} changed since its last build: "
            f"{', '.join(changed)} differ, so the steps keyed by them recompute")
    return plan


def plan_memory(checkpoint: Path, spec: BuildSpec, device_limit: int | None, builds_dir: Path,
                log: Callable[[str], None] | None = None) -> MemoryPlan:
    """Where calibration and export will run on this worker (enginewright/quant/memory_plan.py), or InputError when the
    model fits no plan. Never cached: it reads this worker's free memory."""
    calibration = spec.calibration
    need = estimate_need(read_footprint(checkpoint), spec.dtype, spec.quantization.variant, calibration.num_samples,
                         calibration.seq_len, calibration.batch_size)
    plan = choose_plan(need, probe_worker(device_limit, builds_dir), spec.quantization.variant,
                       one_device_only=spec.quantization.auto is not None)
    if log is not None:
        log("memory " + "; ".join(plan.lines()))
    return plan


def gate_plan(spec: BuildSpec, data: EvalData) -> str:
    """The plan a verdict is reached under, fixed before its data are seen: per task the documents, looks and
    margin, then the error rates, the document order and the shots. A version's verdict stands for this plan only
    (tag gate.plan; docs/gate.md: a second plan on the same records is not covered by the gate's error rates)."""
    rows = []
    for task in spec.evaluation.tasks:
        plan = task_plan(task, document_count(data, task), spec.evaluation)
        max_drop, min_recovery = spec.gate.criteria_for(task)
        margin = ", ".join(part for part in (
            f"drop ≤ {max_drop:g} points" if max_drop is not None else "",
            f"recovery ≥ {min_recovery:g}" if min_recovery is not None else "") if part)
        rows.append(f"{task} {plan.planned} documents in {len(plan.looks)} looks, {margin}")
    family = "" if spec.gate.family_false_fail is None else f", family false fail {spec.gate.family_false_fail:g}"
    return (f"{'; '.join(rows)}; confidence {spec.gate.confidence:g}{family}; document order seed "
            f"{spec.evaluation.sample_seed}; {spec.evaluation.num_fewshot}-shot")
