"""The cache policies: a step's key moves with its own code and with the code of every step before it, never
with the code of a step after it; inputs are keyed by content; unknown objects are refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from enginewright.config.spec import CalibrationSpec
from enginewright.keys import cache_policies
from enginewright.keys.cache_policies import (
    STEPS,
    identity_of,
    module_closure,
    step_code_version,
    step_policy,
)
from enginewright.keys.work_dir import WorkDir


def downstream_of(step: str) -> set[str]:
    """Every step that consumes `step`'s result, directly or through others (read from the STEPS table)."""
    found: set[str] = set()
    frontier = {step}
    while frontier:
        frontier = {s for s, entry in STEPS.items() if set(entry.after) & frontier} - found
        found |= frontier
    return found


@pytest.fixture
def changed_module(monkeypatch: pytest.MonkeyPatch):
    """Edit one module's source as code versions see it (a comment appended), like an upgrade would."""
    read = cache_policies.read_module_source

    def change(module: str) -> None:
        monkeypatch.setattr(cache_policies, "read_module_source",
                            lambda name: read(name) + "\n# changed\n" if name == module else read(name))
        step_code_version.cache_clear()

    yield change
    step_code_version.cache_clear()


@pytest.mark.parametrize("module", ["tasks.quantize", "tasks.gate", "tasks.export", "enginewright.gate.paired_stats"])
def test_a_changed_module_moves_the_steps_that_run_it_and_every_step_after_them(changed_module, module) -> None:
    before = {s: step_code_version(s) for s in STEPS}
    changed_module(module)
    after = {s: step_code_version(s) for s in STEPS}

    moved = {s for s in STEPS if before[s] != after[s]}
    runs_it = {s for s, entry in STEPS.items() if module in module_closure(entry.module)}
    assert runs_it, f"no step runs {module}"
    expected = runs_it | set().union(*(downstream_of(s) for s in runs_it))
    assert moved == expected
    assert "resolve" not in moved and "calibration" not in moved  # what comes before quantization stays cached


def test_a_helper_module_enters_the_closure_of_the_steps_that_import_it() -> None:
    assert "enginewright.gate.paired_stats" in module_closure("tasks.gate")
    assert "enginewright.gate.paired_stats" not in module_closure("tasks.quantize")
    assert "tasks.calibration" in module_closure("tasks.quantize")  # through `from tasks.calibration import`


def test_the_enginewright_version_is_part_of_every_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = step_code_version("resolve")
    monkeypatch.setattr(cache_policies, "enginewright_version", lambda: "99.0.0")
    step_code_version.cache_clear()
    try:
        assert step_code_version("resolve") != before
    finally:
        step_code_version.cache_clear()


def test_inputs_are_keyed_by_content_and_named_exclusions_do_not_matter(tmp_path: Path) -> None:
    policy = step_policy("calibration", "spec", exclude={"spec": ("batch_size",)})
    spec = CalibrationSpec(source=str(tmp_path / "a.txt"))
    key = policy.compute_key(None, {"spec": spec}, {})
    assert key == policy.compute_key(None, {"spec": spec.model_copy(update={"batch_size": 3})}, {})
    assert key != policy.compute_key(None, {"spec": spec.model_copy(update={"seed": spec.seed + 1})}, {})
    assert key.startswith("calibration-")


def test_a_work_dir_is_keyed_by_its_build_key_and_its_incarnation(tmp_path: Path) -> None:
    import shutil

    first = WorkDir.open(tmp_path, "ab" * 32)
    assert identity_of(first) == {"build_key": "ab" * 32, "incarnation": first.incarnation}
    assert WorkDir.open(tmp_path, "ab" * 32).incarnation == first.incarnation
    shutil.rmtree(first.path)
    assert WorkDir.open(tmp_path, "ab" * 32).incarnation != first.incarnation  # deleted: a new life, recompute


def test_an_object_without_an_identity_is_refused_not_keyed_by_its_repr() -> None:
    @dataclass
    class Opaque:
        handle: object

    with pytest.raises(TypeError, match="cannot key a cache on object"):
        identity_of(Opaque(object()))


def test_every_step_policy_names_only_parameters_of_its_task() -> None:
    """A policy naming a parameter its task does not have would fail at run time; check them all here."""
    import inspect

    import tasks.bundle
    import tasks.calibration
    import tasks.evaluate
    import tasks.export
    import tasks.gate
    import tasks.golden
    import tasks.quantize
    import tasks.register
    import tasks.runtime_config
    import tasks.smoke
    import tasks.trtllm_build

    modules = [tasks.bundle, tasks.calibration, tasks.evaluate, tasks.export, tasks.gate, tasks.golden, tasks.quantize,
               tasks.register, tasks.runtime_config, tasks.smoke, tasks.trtllm_build]
    seen = set()
    for module in modules:
        for task in (v for v in vars(module).values() if hasattr(v, "cache_policy") and hasattr(v, "fn")):
            policy = task.cache_policy
            if not isinstance(policy, cache_policies.StepPolicy):
                continue
            params = set(inspect.signature(task.fn).parameters)
            named = set(policy.inputs) | ({policy.writes_into} if isinstance(policy.writes_into, str) else set())
            assert named <= params, (task.name, named - params)
            assert STEPS[policy.step].module == module.__name__, (task.name, policy.step)
            seen.add(policy.step)
    # resolve, the fingerprints, the AutoQuantize search (its state file, under a content address that carries the
    # step's code version, tasks/auto_quantize.search_key, is its cache): ChangeDetector.
    assert seen == set(STEPS) - {"resolve", "calibration-fingerprint", "eval-data", "auto-quantize-search"}
