"""Every build step's cache key, as Prefect cache policies: one module, composed per step.

A step's key is made of four named parts (`StepPolicy`):

- **inputs** — the identity of the task's keyed parameters (`cache_identity()` of our result types, a pydantic
  model's fields, plain values). The build key enters through the `WorkDir` a step writes into;
- **incarnation** — the random id of the directory the step writes into, so deleting it means recompute,
  never a cached result that points at files that are gone;
- **code** — sha256 of the step's task module and of every project module it imports (transitively), of the
  code of the steps whose results it consumes (`STEPS`), and enginewright's version: after an upgrade that
  changes a step, that step and every step after it recompute, and nothing before it;
- **step** — the step's name, so two steps with the same inputs never share a result.

No flow builds a key: a flow passes a task its real inputs and the task's policy keys them.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from enginewright.keys.hashing import sha256_json
from enginewright.keys.work_dir import incarnation

PROJECT_PACKAGES = ("enginewright", "tasks", "flows")


@dataclass(frozen=True)
class Step:
    module: str  # the task module whose code the step runs
    after: tuple[str, ...] = ()  # steps whose results this step consumes


# The build's steps in order, each with the steps it reads from. A code change in one step invalidates it and
# everything downstream of it here.
STEPS: dict[str, Step] = {
    "resolve": Step("tasks.sources"),
    "calibration-fingerprint": Step("tasks.calibration"),
    "eval-data": Step("tasks.eval_data"),
    "calibration": Step("tasks.calibration"),
    "auto-quantize-search": Step("tasks.auto_quantize", after=("calibration",)),
    "quantize": Step("tasks.quantize", after=("calibration", "auto-quantize-search")),
    "export": Step("tasks.export", after=("quantize",)),
    "llm-api-config": Step("tasks.runtime_config"),
    "tensorrt-llm-build": Step("tasks.trtllm_build", after=("export", "llm-api-config")),
    "evaluate-baseline": Step("tasks.evaluate"),  # the matrix's shared baseline, before its variants
    "evaluate": Step("tasks.evaluate", after=("quantize", "export", "tensorrt-llm-build")),
    "gate": Step("tasks.gate", after=("evaluate",)),
    "bundle": Step("tasks.bundle", after=("export", "llm-api-config", "tensorrt-llm-build", "evaluate", "gate")),
    "log-run": Step("tasks.register", after=("bundle",)),
    "store-bundle": Step("tasks.register", after=("bundle",)),
    "register": Step("tasks.register", after=("log-run", "store-bundle")),
}


@runtime_checkable
class Identified(Protocol):
    """A result type that says what about it a downstream cache key depends on (content, not location)."""

    def cache_identity(self) -> Any: ...


def module_file(module: str) -> Path | None:
    """The source file of a project module, found on disk without importing it (core never imports tasks): only
    the top-level package is looked up; the rest of the name is a path under it."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache  # keyed by the source text itself: an edited module is parsed again; the 15 steps share ~60 modules
def project_imports(source: str) -> frozenset[str]:
    """Project modules a module's source may import: `import tasks.z`, `from enginewright.x.y import f` and, for
    `from enginewright.x import y`, `enginewright.x.y` too (y may be a module of the package; a name that is no
    module finds no file and is skipped)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            names = []
        found.update(n for n in names if n.split(".")[0] in PROJECT_PACKAGES)
    return frozenset(found)


def read_module_source(module: str) -> str | None:
    path = module_file(module)
    return path.read_text() if path is not None else None


def module_closure(module: str) -> dict[str, str]:
    """`module` and every project module it imports, transitively: name → source."""
    sources: dict[str, str] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        text = read_module_source(name)
        if text is None:  # a package attribute (`from enginewright.x import f` names no module) or not ours
            continue
        sources[name] = text
        pending.extend(project_imports(text) - sources.keys())
    return sources


def enginewright_version() -> str:
    """The installed version; a checkout run without installing has none (its sources still enter every key)."""
    try:
        return version("enginewright")
    except PackageNotFoundError:
        return "not-installed"


@cache
def step_code_version(step: str) -> str:
    """Hash of what a step runs: its module closure, the code of the steps it reads from, our version."""
    if step not in STEPS:
        raise KeyError(f"unknown build step {step!r}; known: {', '.join(STEPS)}")
    entry = STEPS[step]
    return sha256_json({
        "sources": sha256_json(module_closure(entry.module)),
        "upstream": [step_code_version(s) for s in entry.after],
        "enginewright": enginewright_version(),
    })


def identity_of(value: Any, exclude: Iterable[str] = ()) -> Any:
    """What a keyed input contributes to a key. Unknown objects are an error, never keyed by their repr."""
    excluded = set(exclude)
    if isinstance(value, Identified):
        return value.cache_identity()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude=excluded or None)
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [identity_of(v) for v in value]
    if isinstance(value, dict):
        return {str(k): identity_of(v) for k, v in value.items() if k not in excluded}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: identity_of(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in excluded}
    raise TypeError(f"cannot key a cache on {type(value).__name__}; give it a cache_identity() method")


@dataclass
class StepPolicy(CachePolicy):
    """A build step's key: step name + code version + keyed inputs + the tools it runs + the incarnation of the
    directory it writes into, where that is not a `WorkDir` input (which carries its own)."""

    step: str = ""
    inputs: tuple[str, ...] = ()
    exclude: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per input: fields that do not matter
    tools: tuple[str, ...] = ()  # distributions whose versions shape the result and are not in the build key
    writes_into: str | Callable[[dict[str, Any]], Path] | None = None  # a directory parameter, or a function

    def key_parts(self, inputs: dict[str, Any]) -> dict[str, Any]:
        parts: dict[str, Any] = {
            "step": self.step,
            "code": step_code_version(self.step),
            "inputs": {n: identity_of(inputs[n], self.exclude.get(n, ())) for n in self.inputs},
            "tools": {t: version(t) for t in self.tools},
        }
        if self.writes_into is not None:
            directory = self.writes_into(inputs) if callable(self.writes_into) else Path(inputs[self.writes_into])
            parts["incarnation"] = incarnation(directory)
        return parts

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return f"{self.step}-{sha256_json(self.key_parts(inputs))}"


def step_policy(step: str, *inputs: str, exclude: dict[str, tuple[str, ...]] | None = None,
                tools: tuple[str, ...] = (),
                writes_into: str | Callable[[dict[str, Any]], Path] | None = None) -> StepPolicy:
    """The policy of one build step; every name must be a parameter of the task it decorates."""
    if step not in STEPS:
        raise KeyError(f"unknown build step {step!r}; known: {', '.join(STEPS)}")
    return StepPolicy(step=step, inputs=tuple(inputs), exclude=dict(exclude or {}), tools=tools,
                      writes_into=writes_into)


@dataclass
class ChangeDetector(CachePolicy):
    """Steps that read local files by path (resolve, fingerprints): keyed by a cheap stat fingerprint of those
    files (paths, sizes, mtimes) plus their step's code; `None` (no caching) where the key function says so."""

    step: str = ""
    key_fn: Callable[[dict[str, Any]], Any] | None = None  # inputs -> JSON-able value, or None: do not cache

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        value = self.key_fn(inputs) if self.key_fn is not None else None
        if value is None:
            return None
        return f"{self.step}-{sha256_json([step_code_version(self.step), value])}"
