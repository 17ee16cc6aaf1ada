"""Evaluate a model with lm-evaluation-harness: stock task definitions, local data, per-sample records kept.

The baseline is the unquantized checkpoint; the candidate is ModelOpt's simulated quantization of the
same checkpoint (restored from the calibrated state), evaluated on the same documents.

One load per purpose: the two models this step loads also run the smoke check before the first look
(tasks/smoke.py) and record the golden outputs after the last (tasks/golden.py), each kept next to the key that
made it, so a rerun or a re-evaluation under another plan loads nothing for them.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task

from enginewright.config.eval_tasks import EVAL_TASKS
from enginewright.config.schemas import EngineLane
from enginewright.config.spec import EvaluationSpec, GateSpec
from enginewright.errors import RuntimeLaneFailed
from enginewright.gate.gate_decision import TaskPlan, decide, metric_of, paired_sequence, task_plan
from enginewright.keys.atomic import written_whole
from enginewright.keys.cache_policies import step_code_version, step_policy
from enginewright.keys.environment import package_version
from enginewright.keys.hashing import sha256_file, sha256_json
from enginewright.keys.work_dir import WorkDir
from enginewright.quant.calibrate import QuantizedState
from enginewright.quant.models import load_model, load_tokenizer, pick_device
from enginewright.serving.golden import read_golden, subset_task, write_golden
from tasks import runtimes
from tasks.eval_data import (
    EvalData,
    document_clusters,
    document_count,
    document_order,
    lm_eval_task_configs,
    task_family,
)
from tasks.fewshot import FEWSHOT_SEED, check_drawn, document_seeded_sampler
from tasks.golden import golden_of
from tasks.look_progress import LookProgress
from tasks.runtimes import RuntimeChoice, simulated
from tasks.smoke import smoke_of

SIMULATED = RuntimeChoice("simulated", "the simulated candidate (ModelOpt fake quantization, exported weights)")
SAMPLE_FIELDS = ("doc_id", "doc_hash", "prompt_hash", "target_hash", "acc", "acc_norm")


@dataclass(frozen=True)
class EvalResult:
    label: str  # "baseline" or "candidate"
    metrics: dict[str, dict[str, float]]  # task family -> {"acc", "acc_norm", "n"}
    samples_path: Path  # JSONL of per-sample records
    lm_eval_version: str
    seconds: float  # time spent evaluating in this run (0 when every task came from the baseline store)
    docs_evaluated: int  # documents evaluated in this run

    def cache_identity(self) -> dict[str, str]:
        """The records themselves: a downstream step is keyed by what was evaluated, not where it lies."""
        return {"label": self.label, "samples_sha256": sha256_file(self.samples_path)}

    @property
    def docs_per_second(self) -> float:
        return self.docs_evaluated / self.seconds if self.seconds else 0.0


def sample_records(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """lm-eval's logged samples reduced to what the gate joins on, plus each choice's log-likelihood."""
    records = []
    for task_name, rows in sorted(samples.items()):
        for row in rows:
            record: dict[str, Any] = {"task": task_family(task_name), "subtask": task_name}
            record.update({k: row[k] for k in SAMPLE_FIELDS if k in row})
            record["loglikelihoods"] = [float(r[0]) for r in row.get("filtered_resps", [])]
            records.append(record)
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    metrics: dict[str, dict[str, float]] = {}
    for family in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == family]
        summary = {"n": float(len(rows)), "acc": sum(r["acc"] for r in rows) / len(rows)}
        if all("acc_norm" in r for r in rows):
            summary["acc_norm"] = sum(r["acc_norm"] for r in rows) / len(rows)
        metrics[family] = summary
    return metrics


@functools.cache
def task_manager():
    """lm-eval's task index takes 6–7 s to build; one per process is enough."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def evaluate_documents(
    lm: Any, spec: EvaluationSpec, documents: dict[str, list[tuple[str, int]]], data: EvalData, cache_dir: Path,
) -> dict[str, list[dict[str, Any]]]:
    """Per-sample records of the given documents (task → [(lm-eval task, index)]), in the order given."""
    import lm_eval

    subtasks: dict[str, list[int]] = {}
    for docs in documents.values():
        for subtask, index in docs:
            subtasks.setdefault(subtask, []).append(index)
    if not subtasks:
        return {task: [] for task in documents}
    # Sorted: lm-eval 0.4.13 evaluates a task's selected documents in split order and labels the k-th with
    # samples[k] (EleutherAI/lm-evaluation-harness lm_eval/evaluator.py, `doc_id_true = indices[doc_id]`), so
    # an unsorted list would mislabel them. Every lm-eval task named here has a non-empty list: an empty one
    # means "all documents" there.
    selected = {subtask: sorted(indices) for subtask, indices in subtasks.items()}
    samplers = {subtask: document_seeded_sampler(subtask, indices, FEWSHOT_SEED) for subtask, indices in
                selected.items() if spec.num_fewshot > 0 and EVAL_TASKS[task_family(subtask)].fewshot_random}
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=lm_eval_task_configs(data, list(documents), cache_dir, only=set(subtasks), samplers=samplers),
        num_fewshot=spec.num_fewshot,
        samples=selected,
        log_samples=True,
        task_manager=task_manager(),
        bootstrap_iters=0,  # the gate does its own paired statistics
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=FEWSHOT_SEED,
    )
    check_drawn(samplers)
    by_key = {(r["subtask"], r["doc_id"]): r for r in sample_records(output["samples"])}
    return {task: [by_key[(subtask, index)] for subtask, index in docs] for task, docs in documents.items()}


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_records(records: list[dict[str, Any]], path: Path) -> None:
    with written_whole(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


def lm_eval_version() -> str:
    return package_version("lm-eval")


def numerics(spec: EvaluationSpec, dtype: str) -> dict[str, str]:
    """What changes a log-likelihood besides the model: baseline and candidate must share all of it."""
    return {"dtype": dtype, "logprob_dtype": spec.logprob_dtype, "batch_size": str(spec.batch_size),
            "torch": torch.__version__, "transformers": package_version("transformers"),
            "lm-eval": lm_eval_version(), "device": str(pick_device())}


def baseline_key(source_identity: str, task_name: str, data: EvalData, spec: EvaluationSpec, dtype: str) -> str:
    """What a baseline sequence depends on; every later build of the same revision continues it, until the
    evaluation code or the numerics change (an upgrade never pairs a candidate with a baseline of older code)."""
    return sha256_json([source_identity, task_name, data.task_fingerprints[task_name], spec.num_fewshot,
                        spec.sample_seed, numerics(spec, dtype), step_code_version("evaluate")])


class Sequence:
    """The records of one side on one task, in sequence order, kept as a JSONL file next to a stamp (`.key`: the key
    that made them and the sha256 of the file as written): a later run with the same key continues it; another key
    starts it over. Records that do not match their stamp — edited, cut mid-line, or written before records were
    digested — are never believed: the file is moved aside (`.refused-<time>`), `log` names it and why, and the
    sequence starts over, so the documents are evaluated again."""

    def __init__(self, path: Path, key: str, log: Callable[[str], None] = lambda message: None) -> None:
        self.path, self.key = path, key
        self.records = self._read(log)

    def _read(self, log: Callable[[str], None]) -> list[dict[str, Any]]:
        key_file = self.path.with_suffix(".key")
        if not (key_file.is_file() and self.path.is_file()):
            return []
        stamp = read_stamp(key_file)
        if stamp.get("key") != self.key:
            return []  # another key's records: started over, as before
        if stamp.get("sha256") is None:
            problem = "its stamp has no digest (written before records were digested)"
        elif sha256_file(self.path) != stamp["sha256"]:
            problem = "its bytes differ from the sha256 written with them (edited or cut after writing)"
        else:
            try:
                return read_records(self.path)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problem = f"a record is not whole JSON ({exc})"
        refused = self.path.with_name(f"{self.path.name}.refused-{time.strftime('%Y%m%dT%H%M%S')}")
        self.path.replace(refused)
        key_file.unlink(missing_ok=True)
        log(f"records refused: {self.path}: {problem}; moved to {refused.name}, its documents are evaluated again")
        return []

    def extend(self, records: list[dict[str, Any]]) -> None:
        start = len(self.records)
        self.records += [dict(r, position=start + i) for i, r in enumerate(records)]
        write_records(self.records, self.path)
        write_json_stamp(self.path.with_suffix(".key"), {"key": self.key, "sha256": sha256_file(self.path)})


def read_stamp(key_file: Path) -> dict[str, Any]:
    """A sequence's stamp; a stamp of the old form (the key alone, as text) has no digest."""
    text = key_file.read_text()
    try:
        stamp = json.loads(text)
    except json.JSONDecodeError:
        return {"key": text}
    return stamp if isinstance(stamp, dict) else {"key": text}


def read_json_stamp(path: Path) -> dict[str, Any]:
    try:
        stamp = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def write_json_stamp(path: Path, stamp: dict[str, Any]) -> None:
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(stamp) + "\n")


@dataclass(frozen=True)
class Evaluation:
    baseline: EvalResult
    candidate: EvalResult
    plans: dict[str, TaskPlan]
    samples_file: Path  # {lm-eval task: [indices]} of every document the gate judged: lm-eval's --samples
    runtime: dict[str, Any]  # RuntimeChoice.record() of the candidate, plus per-task "agreement" (or None)
    golden: str | None = None  # digest of the golden records written into the bundle (None: not recorded)

    def cache_identity(self) -> dict[str, Any]:
        return {"baseline": self.baseline.cache_identity(), "candidate": self.candidate.cache_identity(),
                "plans": {t: list(p.looks) for t, p in sorted(self.plans.items())}, "runtime": self.runtime,
                "golden": self.golden}


class _Side:
    """One model under evaluation, made on first use only (a look that needs nothing new loads nothing)."""

    def __init__(self, make_lm: Callable[[], Any]) -> None:
        self._make_lm = make_lm
        self._lm: Any = None
        self.seconds, self.evaluated = 0.0, 0

    def loaded(self) -> Any:
        """The lm-eval model, made now if no look needed it yet."""
        if self._lm is None:
            self._lm = self._make_lm()
        return self._lm

    def evaluate(self, documents: dict[str, list[tuple[str, int]]], spec: EvaluationSpec, data: EvalData,
                 cache_dir: Path, desc: str) -> dict[str, list[dict[str, Any]]]:
        """Records of `documents`, a progress bar named `desc` on the terminal meanwhile."""
        started = time.perf_counter()
        self.loaded()
        desc += " · " + ", ".join(documents)
        records = evaluate_documents(LookProgress(self._lm, desc), spec, documents, data, cache_dir)
        self.seconds += time.perf_counter() - started
        self.evaluated += sum(len(docs) for docs in documents.values())
        return records

    def close(self) -> None:
        if self._lm is not None and hasattr(self._lm, "shutdown"):
            self._lm.shutdown()
        self._lm = None


def baseline_side(checkpoint: Path, dtype: str, tokenizer: Any, spec: EvaluationSpec) -> _Side:
    return _Side(lambda: simulated.hf_lm(load_model(checkpoint, dtype), tokenizer, spec))


def baseline_sequences(source_identity: str, dtype: str, spec: EvaluationSpec, data: EvalData, store_dir: Path,
                       log: Callable[[str], None] = lambda message: None) -> dict[str, Sequence]:
    keys = {t: baseline_key(source_identity, t, data, spec, dtype) for t in spec.tasks}
    return {t: Sequence(store_dir / key[:32] / f"{t}.jsonl", key, log) for t, key in keys.items()}


def evaluate_baseline_plan(checkpoint: Path, source_identity: str, dtype: str, spec: EvaluationSpec, data: EvalData,
                           cache_dir: Path, store_dir: Path, log: Callable[[str], None] = lambda message: None) -> int:
    """Every planned baseline document into the store at once (the matrix does this before its variants start,
    so no variant evaluates the baseline); returns the documents evaluated now."""
    sequences = baseline_sequences(source_identity, dtype, spec, data, store_dir, log)
    missing = {}
    for t in spec.tasks:
        planned = task_plan(t, document_count(data, t), spec).planned
        missing[t] = document_order(data, t, spec.sample_seed)[len(sequences[t].records):planned]
    missing = {t: docs for t, docs in missing.items() if docs}
    if not missing:
        return 0
    side = baseline_side(checkpoint, dtype, load_tokenizer(checkpoint), spec)
    for t, records in side.evaluate(missing, spec, data, cache_dir, "baseline").items():
        sequences[t].extend(records)
    return side.evaluated


def runtime_lm(runtime: RuntimeChoice, bundle_dir: Path, tokenizer: Any, batch_size: int) -> Any:
    """The lm-eval model of a real runtime (imported here: lm-eval's registry, and TensorRT-LLM when called)."""
    if runtime.runtime == "vllm":
        from tasks.runtimes import vllm

        assert runtime.python is not None
        return vllm.make_lm(bundle_dir, tokenizer, runtime.python)
    from tasks.runtimes import tensorrt_llm

    return tensorrt_llm.make_lm(bundle_dir, tokenizer, batch_size)


def candidate_key(state: QuantizedState, spec: EvaluationSpec, dtype: str, runtime: RuntimeChoice) -> str:
    """What a candidate sequence depends on: the calibrated state, the documents' order, the numerics, the
    evaluation code and the runtime that computed it (a TensorRT-LLM record is never continued by a simulated one)."""
    return sha256_json([state.cache_identity(), spec.num_fewshot, spec.sample_seed, numerics(spec, dtype),
                        step_code_version("evaluate"), spec.fold_weights, runtime.runtime, runtime.version])


def evaluate_looks(tasks: list[str], orders: dict[str, list[tuple[str, int]]], plans: dict[str, TaskPlan],
                   sides: dict[str, tuple[_Side, dict[str, Sequence]]], spec: EvaluationSpec, gate: GateSpec,
                   data: EvalData, cache_dir: Path, log: Callable[[str], None]) -> tuple[dict[str, int], list[str]]:
    """Both sides look by look until each task's sequential test decides or its plan ends: the documents each
    task reached, and the tasks that failed. A failed task fails the build whatever the others show, so the tasks
    still undecided stop at the look where it failed (judged there: inconclusive at that look) instead of spending
    the rest of their plans on a build that cannot pass."""
    reached: dict[str, int] = {}
    failed: list[str] = []
    for look in range(max(len(p.looks) for p in plans.values())):
        active = [t for t in tasks if t not in reached and look < len(plans[t].looks)]
        if not active:
            break
        for label, (side, sequences) in sides.items():
            missing = {t: orders[t][len(sequences[t].records):plans[t].looks[look]] for t in active}
            missing = {t: docs for t, docs in missing.items() if docs}
            if missing:
                log(f"look {look + 1}: evaluating the {label} on " + ", ".join(
                    f"{t} {len(docs)} documents ({plans[t].looks[look] - len(docs) + 1}–{plans[t].looks[look]} of "
                    f"{plans[t].planned})" for t, docs in missing.items()))
                for t, records in side.evaluate(missing, spec, data, cache_dir, f"look {look + 1} · {label}").items():
                    sequences[t].extend(records)
        for t in active:
            n = plans[t].looks[look]
            base, cand, _, _ = paired_sequence(sides["baseline"][1][t].records[:n],
                                               sides["candidate"][1][t].records[:n], t, metric_of(t, gate))
            decided = decide(base, cand, plans[t], gate, len(tasks))
            assert decided is not None
            log(f"{t}: look {look + 1}/{len(plans[t].looks)}, {n} documents: {decided.decision.verdict} "
                f"(Z {decided.decision.z:+.2f}; pass at ≥ {decided.decision.pass_bound:.2f}, "
                f"fail at ≤ {-decided.decision.fail_bound:.2f})")
            if decided.decision.verdict != "inconclusive" or look == len(plans[t].looks) - 1:
                reached[t] = n
            if decided.decision.verdict == "fail":
                failed.append(t)
        stopped = [t for t in active if t not in reached] if failed else []
        if stopped:
            log(f"{', '.join(failed)} failed: the build fails whatever the other tasks show; "
                f"{', '.join(stopped)} stop at look {look + 1}")
            reached.update({t: plans[t].looks[look] for t in stopped})
            break
    return reached, failed


def chosen_answer(record: dict[str, Any]) -> int:
    """The choice a model picked: the highest log-likelihood (lm-eval's `acc` rule)."""
    lls = record["loglikelihoods"]
    return max(range(len(lls)), key=lls.__getitem__)


def runtime_agreement(runtime_records: list[dict[str, Any]], simulated_records: list[dict[str, Any]],
                      ) -> dict[str, float]:
    """How often two evaluations of the same candidate chose the same answer, over the documents both have."""
    simulated_by_doc = {(r["subtask"], r["doc_id"]): chosen_answer(r) for r in simulated_records}
    pairs = [(chosen_answer(r), simulated_by_doc[(r["subtask"], r["doc_id"])]) for r in runtime_records
             if (r["subtask"], r["doc_id"]) in simulated_by_doc]
    same = sum(a == b for a, b in pairs)
    return {"n": len(pairs), "same": same, "share": same / len(pairs) if pairs else float("nan")}


def generating_side(runtime: RuntimeChoice, side: _Side, simulated_side: _Side) -> tuple[RuntimeChoice, _Side]:
    """Who generates the smoke check's and the golden records' greedy text: the evaluated candidate where its runtime
    can (simulated, vLLM: vLLM's records are vLLM's kernels), the simulated candidate where it cannot (TensorRT-LLM's
    lane has no greedy generation here)."""
    return (runtime, side) if runtime.runtime in ("simulated", "vllm") else (SIMULATED, simulated_side)


def smoke_before_looks(baseline: _Side, candidate: _Side, tokenizer: Any, gate: GateSpec, candidate_key: str,
                       stamp: Path, log: Callable[[str], None]) -> None:
    """The smoke check on the two models the looks will use, before the first look; raises GateFailed. Kept next
    to the key it ran under (`stamp`): a rerun, or a re-evaluation of the same candidate, loads nothing for it."""
    if not gate.smoke:
        log("smoke check: skipped (gate.smoke is off)")
        return
    key = sha256_json([candidate_key, gate.smoke_prompts, gate.smoke_max_new_tokens])
    kept = read_json_stamp(stamp)
    if kept.get("key") == key:
        log(f"smoke check: {kept['result']['verdict']} (kept from an earlier run of this candidate)")
        return
    log(f"smoke check: {len(gate.smoke_prompts)} prompts × {gate.smoke_max_new_tokens} greedy tokens, baseline then "
        "candidate (the models the looks use)")
    result = smoke_of(baseline.loaded(), candidate.loaded(), tokenizer, gate.smoke_prompts,
                      gate.smoke_max_new_tokens)
    log(f"smoke check: {result['verdict']} ({result['reason']})")
    write_json_stamp(stamp, {"key": key, "result": result})


def golden_after_looks(side: _Side, tokenizer: Any, data: EvalData, tasks: list[str], candidate_key: str,
                       work: WorkDir, log: Callable[[str], None]) -> str:
    """The golden records of the candidate the gate judged, written into the bundle; their digest. Kept next to the
    key they were recorded under: a re-evaluation of the same candidate records nothing again."""
    subset = subset_task(tasks)
    key = sha256_json([candidate_key, subset, data.task_fingerprints.get(subset) if subset else None])
    stamp, kept = work.evaluation / "golden.key", read_golden(work.bundle)
    if kept is not None and read_json_stamp(stamp) == {"key": key, "digest": kept.digest}:
        log("golden records: kept from an earlier run of this candidate")
        return kept.digest
    golden = golden_of(side.loaded(), tokenizer, data.data_dir, tasks)
    write_golden(work.bundle, golden)
    write_json_stamp(stamp, {"key": key, "digest": golden.digest})
    log(f"golden records: {len(golden.continuations)} greedy continuations, {len(golden.answers)} subset answers")
    return golden.digest


def evaluate_until_decided(
    checkpoint: Path, source_identity: str, state: QuantizedState, dtype: str, spec: EvaluationSpec,
    gate: GateSpec, data: EvalData, cache_dir: Path, store_dir: Path, work: WorkDir,
    runtime: RuntimeChoice = SIMULATED, log: Callable[[str], None] = lambda message: None,
) -> Evaluation:
    """Baseline and candidate on each task's documents in seeded random order, look by look, until the task's
    sequential test decides or its plan ends. Each side's records continue from what earlier runs of the same
    keys left (the baseline's in the store, shared by every build of the revision; the candidate's in the work
    dir), so a rerun evaluates only documents no run has evaluated yet.

    The candidate is computed by `runtime`. Where that is TensorRT-LLM, the simulated candidate is evaluated too,
    on the first `spec.agreement_documents` documents of each task, and the share of documents on which both chose
    the same answer is recorded; a TensorRT-LLM failure falls back to the simulated candidate with its reason.

    Before the first look the same models run the smoke check (`gate.smoke`); after the last, the candidate records
    the golden outputs into the bundle — vLLM where vLLM computed it, else the simulated candidate (TensorRT-LLM's
    lane has no greedy generation here, so both use the simulated candidate there)."""
    tasks = list(spec.tasks)
    orders = {t: document_order(data, t, spec.sample_seed) for t in tasks}
    plans = {t: task_plan(t, len(orders[t]), spec, document_clusters(data, t, orders[t])) for t in tasks}
    tokenizer = load_tokenizer(checkpoint)
    baseline = (baseline_side(checkpoint, dtype, tokenizer, spec),
                baseline_sequences(source_identity, dtype, spec, data, store_dir, log))
    simulated_side = _Side(lambda: simulated.make_lm(checkpoint, state, dtype, spec, work.checkpoint, tokenizer))

    def sequences(label: str, choice: RuntimeChoice) -> dict[str, Sequence]:
        key = candidate_key(state, spec, dtype, choice)
        return {t: Sequence(work.evaluation / label / f"{t}.jsonl", key, log) for t in tasks}

    def runtime_side(choice: RuntimeChoice) -> _Side:
        return _Side(lambda: runtime_lm(choice, work.bundle, tokenizer, spec.batch_size))

    while True:
        side = simulated_side if runtime.runtime == "simulated" else runtime_side(runtime)
        candidate = (side, sequences("candidate" if runtime.runtime == "simulated" else "runtime", runtime))
        try:
            generator, generating = generating_side(runtime, side, simulated_side)
            smoke_before_looks(baseline[0], generating, tokenizer, gate, candidate_key(state, spec, dtype, generator),
                               work.evaluation / "smoke.json", log)
            reached, failed = evaluate_looks(tasks, orders, plans, {"baseline": baseline, "candidate": candidate},
                                             spec, gate, data, cache_dir, log)
            break
        except RuntimeLaneFailed as exc:
            side.close()
            log(f"the {runtime.runtime} evaluation failed; evaluating the simulated candidate instead: {exc}")
            runtime = RuntimeChoice("simulated", f"runtime evaluation failed ({exc}); the simulated candidate was "
                                    "evaluated instead", runtime.version)
    generator, generating = generating_side(runtime, candidate[0], simulated_side)
    golden = None
    if failed:  # no bundle of a failed build is stored or served: nothing would replay them
        log(f"golden records: not recorded ({', '.join(failed)} failed the gate)")
    else:
        golden = golden_after_looks(generating, tokenizer, data, tasks, candidate_key(state, spec, dtype, generator),
                                    work, log)
    candidate[0].close()
    record: dict[str, Any] = runtime.record() | {"agreement": None}
    if runtime.runtime != "simulated":
        checked = sequences("candidate", SIMULATED)
        missing = {t: orders[t][len(checked[t].records):min(spec.agreement_documents, reached[t])] for t in tasks}
        missing = {t: docs for t, docs in missing.items() if docs}
        if missing:
            log("runtime agreement: evaluating the simulated candidate on " + ", ".join(
                f"{t} {len(docs)} documents" for t, docs in missing.items()))
            for t, rows in simulated_side.evaluate(missing, spec, data, cache_dir, "agreement · simulated").items():
                checked[t].extend(rows)
        record["agreement"] = {t: runtime_agreement(candidate[1][t].records[:reached[t]], checked[t].records)
                               for t in tasks}
    results = {}
    for label, (side, seqs) in {"baseline": baseline, "candidate": candidate}.items():
        records = [r for t in tasks for r in seqs[t].records[:reached[t]]]
        path = work.evaluation / f"{label}-samples.jsonl"
        write_records(records, path)
        results[label] = EvalResult(label=label, metrics=summarize(records), samples_path=path,
                                    lm_eval_version=lm_eval_version(), seconds=side.seconds,
                                    docs_evaluated=side.evaluated)
    samples_file = work.evaluation / "samples.json"
    chosen: dict[str, list[int]] = {}
    for t in tasks:
        for subtask, index in orders[t][:reached[t]]:
            chosen.setdefault(subtask, []).append(index)
    with written_whole(samples_file) as tmp:
        # Sorted, as lm-eval's --samples needs them (see evaluate_documents); the order is in each record's position.
        tmp.write_text(json.dumps({k: sorted(v) for k, v in chosen.items()}, sort_keys=True) + "\n")
    simulated_side.close()
    return Evaluation(baseline=results["baseline"], candidate=results["candidate"], plans=plans,
                      samples_file=samples_file, runtime=record, golden=golden)


# Where the data lives does not change a result (the data is keyed by content).
EVAL_EXCLUDE: dict[str, tuple[str, ...]] = {"spec": ("data_dir", "runtime_agreement_min")}
# Nor, for the baseline, anything about the candidate's runtime.
BASELINE_EXCLUDE: dict[str, tuple[str, ...]] = {"spec": ("data_dir", "runtime_agreement_min", "agreement_documents")}


@task(name="evaluate-baseline", persist_result=True, cache_policy=step_policy(
    "evaluate-baseline", "source_identity", "dtype", "spec", "data", exclude=BASELINE_EXCLUDE, tools=("lm-eval",)))
def baseline_task(checkpoint: Path, source_identity: str, dtype: str, spec: EvaluationSpec, data: EvalData,
                  cache_dir: Path, store_dir: Path) -> int:
    return evaluate_baseline_plan(checkpoint, source_identity, dtype, spec, data, cache_dir, store_dir,
                                  get_run_logger().warning)


@task(name="evaluate", persist_result=True, cache_policy=step_policy(
    "evaluate", "work", "source_identity", "state", "dtype", "spec", "gate", "data", "engine", "vllm_python",
    exclude=EVAL_EXCLUDE,
    tools=("lm-eval",)))
def evaluate_task(
    work: WorkDir, checkpoint: Path, source_identity: str, state: QuantizedState, dtype: str, spec: EvaluationSpec,
    gate: GateSpec, data: EvalData, cache_dir: Path, store_dir: Path, engine: EngineLane,
    vllm_python: str | None = None,
) -> Evaluation:
    """Baseline and candidate, look by look; the candidate on the runtime this worker has (tasks.runtimes)."""
    logger = get_run_logger()
    runtime = runtimes.choose(engine, vllm_python, work.checkpoint)
    logger.info(f"candidate runtime: {runtime.runtime} — {runtime.reason}")
    return evaluate_until_decided(checkpoint, source_identity, state, dtype, spec, gate, data, cache_dir, store_dir,
                                  work, runtime=runtime, log=logger.info)
