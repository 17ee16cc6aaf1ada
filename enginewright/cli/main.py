"""`enginewright` command line: each command group's module adds its commands (build.py: build, matrix;
registry.py: pull, versions, promote, watch; serving.py: deploy, rollback, verify; operations.py: stack, pools,
convert-gguf). Every spec field is a flag of build and matrix (spec_flags.py)."""

from __future__ import annotations

import argparse
import sys

from enginewright import __version__
from enginewright.cli import build, operations, registry, serving
from enginewright.config.settings import load_settings
from enginewright.errors import EnginewrightError
from enginewright.ops.process_env import prepare_process


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="enginewright",
        description="Quantize a Hugging Face checkpoint with NVIDIA Model Optimizer, check its accuracy with "
        "lm-eval, and register a TensorRT-LLM-ready bundle in MLflow.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    for group in (build, registry, serving, operations):
        group.add_commands(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        device = getattr(args, "device", None)  # a flag that is a setting: validated with the others
        settings = load_settings(**({"device": device} if device is not None else {}))
        prepare_process(settings)
        return args.run(args, settings)
    except EnginewrightError as exc:
        print(f"enginewright: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
