"""`enginewright deploy | rollback | verify`: a registered version onto a deploy target, checked live, undone."""

from __future__ import annotations

import argparse
from pathlib import Path

from enginewright.config.settings import Settings
from enginewright.errors import EnginewrightError
from enginewright.ops.console import command_log


def add_commands(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser(
        "deploy", help="deploy a registered version to a target: verify, check fit, render serving configs",
        description="Pull and verify the bundle of a model version, check it fits the target (gate passed; FP8 "
        "needs compute capability 8.9+, NVFP4/MX 10.0+; a legacy engine only on its own GPU architecture and "
        "TensorRT version), render the target runtime's release (trtllm-serve with its LLM-API YAML and a Triton "
        "LLM-API model repository, or vllm serve) under $ENGINEWRIGHT_HOME/serving/<target>/<model>/, switch "
        "`current` to it and record the rollout on the version. This is what setting the alias in the MLflow UI "
        "runs. A refused deploy changes nothing that serves and exits 1 with the reason. Where the target names an "
        "`endpoint`, the switched release is then verified there (see `enginewright verify --help`) and rolled back "
        "by itself when it fails (exit 1).",
    )
    deploy.add_argument("model_name", help="registered model name")
    which = deploy.add_mutually_exclusive_group()
    which.add_argument("--version", help="version number to deploy")
    which.add_argument("--alias", help="deploy the version this alias points at [default: ENGINEWRIGHT_DEPLOY_ALIAS, "
                       "production]")
    deploy.add_argument("--target", type=Path, help="deploy target YAML [default: ENGINEWRIGHT_DEPLOY_TARGET, "
                        "specs/targets/h100.yaml]")
    deploy.set_defaults(run=cmd_deploy)

    rollback = commands.add_parser(
        "rollback", help="move the production alias back to the previous deployed version and re-render",
        description="Set the deploy alias (production) back to the version that served on the target before the "
        "current one (from the registered model's deploy.<target>.history tag) and deploy it again.",
    )
    rollback.add_argument("model_name", help="registered model name")
    rollback.add_argument("--target", type=Path, help="deploy target YAML [default: ENGINEWRIGHT_DEPLOY_TARGET]")
    rollback.set_defaults(run=cmd_rollback)

    verify = commands.add_parser(
        "verify", help="verify the live release on the target's endpoint; roll it back when it fails",
        description="Check that the endpoint the target names (`endpoint: http://host:port`) serves the release "
        "`current` points at, as the build recorded it: wait for /health, /v1/models and /version (bounded by "
        "verify.ready_timeout_s), replay the bundle's golden greedy continuations (exact matches reported; the "
        "mean share reproduced before diverging must reach verify.min_golden_prefix), ask its lettered "
        "evaluation subset through lm-eval's local-completions model (at least verify.min_subset_agreement of "
        "the build's answers, and not significantly fewer right: exact McNemar), and run an AIPerf load test at "
        "verify.load_concurrency. The outcome is tagged on the version (deploy.<target>.verification). A failure "
        "rolls back: `current` and the alias return to the version that served before, and the command exits 1 "
        "with every reason. Every deploy to a target with an endpoint runs this by itself.",
    )
    verify.add_argument("model_name", help="registered model name")
    verify.add_argument("--target", type=Path, help="deploy target YAML with an endpoint [default: "
                        "ENGINEWRIGHT_DEPLOY_TARGET]")
    verify.add_argument("--no-rollback", action="store_true", help="report a failure but leave the release serving")
    verify.set_defaults(run=cmd_verify)


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
        with command_log(settings.home, "deploy"):
            outcome = deploy_version(args.model_name, args.version, alias, target, action="manual")
    except DeployRefused as exc:
        raise EnginewrightError(f"refused: {exc}") from None
    print(outcome.message)
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.errors import DeployRefused
    from flows.deploy import rollback

    try:
        with command_log(settings.home, "rollback"):
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
        with command_log(settings.home, "verify"):
            outcome = verify_release(args.model_name, str(args.target) if args.target else None,
                                     roll_back=not args.no_rollback)
    except VerificationFailed as exc:
        raise EnginewrightError(str(exc)) from None
    print(outcome.message)
    return 0
