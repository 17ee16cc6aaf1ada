"""Every field of the build spec as a command-line flag, generated from the spec's pydantic models.

Each field is `--<section>.<field>` (`--evaluation.limit`, `--quantization.auto.method`), its help the field's own
description and default; the flags people type most also have a short name (`ALIASES`: `--quant`, `--tasks`,
`--limit` …). A flag only shapes the text (a comma list, `none` for an optional value, `--x/--no-x` for a switch);
the spec's models validate the values, so a bad one is the same one-line error as in a YAML spec.

Why generated here rather than by a library: pydantic-settings' CLI source and typer/cyclopts each parse a whole
command into one model, while `build` and `matrix` merge flags over a YAML spec over the embedded defaults and the
matrix replaces two fields with lists of its own; the walk below is ~100 lines over pydantic's own field info.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from enginewright.config.settings import Settings
from enginewright.config.spec import BuildSpec, embedded_defaults

UNSET = object()  # an optional field set to `none` on the command line

# The short names: a field has at most one, and each is what lm-eval's, ModelOpt's hf_ptq.py's or our README's
# users type.
ALIASES: dict[str, str] = {
    "source.model": "--model",
    "source.revision": "--revision",
    "quantization.format": "--quant",
    "quantization.awq_block_size": "--awq-block-size",
    "quantization.kv_cache": "--kv-quant",
    "quantization.auto.effective_bits": "--auto-bits",
    "quantization.auto.formats": "--auto-formats",
    "quantization.auto.method": "--auto-method",
    "calibration.source": "--calib",
    "calibration.num_samples": "--calib-samples",
    "calibration.seq_len": "--calib-seq-len",
    "calibration.seed": "--seed",
    "calibration.batch_size": "--calib-batch-size",
    "evaluation.tasks": "--tasks",
    "evaluation.limit": "--limit",
    "evaluation.look_size": "--look-size",
    "evaluation.num_fewshot": "--num-fewshot",
    "evaluation.data_dir": "--eval-data",
    "evaluation.batch_size": "--batch-size",
    "gate.max_drop_points": "--max-drop",
    "registry.model_name": "--model-name",
    "registry.reevaluate": "--reevaluate",
}


@dataclass(frozen=True)
class SpecFlag:
    path: str  # dotted field path, e.g. "evaluation.limit"
    model: type[BaseModel]  # the model holding the field (its description is the help)
    field: str
    info: FieldInfo
    within: str | None = None  # an optional section (quantization.auto) the field sets by being given

    @property
    def dest(self) -> str:
        return "spec__" + self.path.replace(".", "__")

    @property
    def names(self) -> list[str]:
        return [f"--{self.path}", *([ALIASES[self.path]] if self.path in ALIASES else [])]


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return annotation, False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _unwrap_optional(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def spec_flags(model: type[BaseModel] = BuildSpec, prefix: str = "", within: str | None = None) -> Iterator[SpecFlag]:
    """Every leaf field of `model`, nested models walked (an optional section such as quantization.auto too: any of
    its flags sets the section, its other fields at their defaults)."""
    for name, info in model.model_fields.items():
        nested = _model_of(info.annotation)
        if nested is not None:
            section_is_optional = _unwrap_optional(info.annotation)[1]
            yield from spec_flags(nested, f"{prefix}{name}.",
                                  within or (f"{prefix}{name}" if section_is_optional else None))
        else:
            yield SpecFlag(f"{prefix}{name}", model, name, info, within)


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _none_or(parse: Any) -> Any:
    def parsed(text: str) -> Any:
        if text.strip().lower() in ("none", "all"):
            return UNSET
        try:
            return parse(text)
        except ValueError:
            kind = {int: "a whole number", float: "a number"}.get(parse, "a value")
            raise argparse.ArgumentTypeError(f"expected {kind} or 'none', got {text!r}") from None

    return parsed


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected JSON, e.g. '{{\"arc_easy\": {{\"max_drop_points\": 3}}}}': {exc}") from None


def _argparse_kwargs(flag: SpecFlag, embedded: str | None) -> dict[str, Any]:
    annotation, optional = _unwrap_optional(flag.info.annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    kwargs: dict[str, Any] = {"dest": flag.dest, "default": None, "help": _help(flag, embedded, optional)}
    if annotation is bool:
        return kwargs | {"action": argparse.BooleanOptionalAction}
    if origin is Literal:  # the choices shown; the spec's model refuses another value with the field's own message
        return kwargs | {"metavar": "{" + ",".join(map(str, args)) + "}"}
    if origin is list:
        item = args[0] if args else str
        if typing.get_origin(item) is Literal:  # names from a table: a comma list
            return kwargs | {"type": comma_list, "metavar": ",".join(map(str, typing.get_args(item)[:3])) + ",…"}
        return kwargs | {"action": "append", "metavar": "TEXT"}  # free text may hold commas: repeat the flag
    if origin is dict:
        return kwargs | {"type": _json, "metavar": "JSON"}
    parse = {int: int, float: float, str: str, Path: str}.get(annotation, str)  # unions: the model coerces
    return kwargs | {"type": _none_or(parse) if optional else parse, "metavar": flag.field.upper()}


def _help(flag: SpecFlag, embedded: str | None, optional: bool) -> str:
    info = flag.info
    value = None if info.is_required() else info.get_default(call_default_factory=True)
    shown = (",".join(map(str, value)) or "none") if isinstance(value, list) else "unset" if value is None else value
    default = f" [default: {embedded}]" if embedded else "" if info.is_required() else f" [default: {shown}]"
    if flag.within is not None:  # nothing of the section applies unless one of its flags is given
        default = f" (sets {flag.within}, none unless given{'; then ' + default.strip(' []') if default else ''})"
    if optional:
        default += " ('none' unsets it)"
    return ((info.description or "") + default).replace("%", "%%")  # argparse formats help with %


def embedded_defaults_shown() -> dict[str, Any]:
    """The embedded spec's values as `--help` shows them: in terms of the settings they come from."""
    symbolic = Settings.model_construct(home=Path("$ENGINEWRIGHT_HOME"),
                                        shared_data_dir=Path("$ENGINEWRIGHT_SHARED_DATA_DIR"))
    return embedded_defaults(symbolic)


def _embedded_value(embedded: dict[str, Any], path: str) -> str | None:
    value: Any = embedded
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def add_spec_flags(command: argparse.ArgumentParser, spec_help: str, leave_out: Iterable[str] = ()) -> None:
    """--spec and one flag per spec field (an argument group per section), except the paths in `leave_out`."""
    command.add_argument("--spec", type=Path, help=spec_help)
    embedded = embedded_defaults_shown()
    skipped = set(leave_out)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in spec_flags():
        if flag.path in skipped:
            continue
        section = flag.path.split(".")[0] if "." in flag.path else "build"
        if section not in groups:
            groups[section] = command.add_argument_group(f"spec: {section}")
        groups[section].add_argument(*flag.names, **_argparse_kwargs(flag, _embedded_value(embedded, flag.path)))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given on the command line, as a nested mapping over the spec (`none` → None)."""
    overrides: dict[str, Any] = {}
    for flag in spec_flags():
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        *sections, field = flag.path.split(".")
        node = overrides
        for section in sections:
            node = node.setdefault(section, {})
        node[field] = None if value is UNSET else value
    return overrides
