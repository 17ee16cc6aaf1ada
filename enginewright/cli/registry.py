"""`enginewright pull | versions | promote … | watch …`: the registry's versions, its alias changes, the watched
checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from enginewright.config.settings import Settings, revealed
from enginewright.errors import InputError
from enginewright.registry.events import require_prefect_server


def add_commands(commands: argparse._SubParsersAction) -> None:
    pull = commands.add_parser(
        "pull", help="download a registered bundle and verify it against its manifest",
        description="Download the bundle of a model version from the MLflow registry into DIR, verified: every "
        "file's size and sha256 as the manifest lists them, no file missing or extra, no path outside DIR. "
        "Nothing is left at DIR when verification fails (exit 1).",
    )
    pull.add_argument("model_uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    pull.add_argument("dest", type=Path, help="new or empty directory")
    pull.set_defaults(run=cmd_pull)

    versions = commands.add_parser(
        "versions", help="list a registered model's versions: verdict, format, bits, aliases, deploy status",
        description="One line per version of MODEL in the MLflow registry, newest first: the accuracy gate's verdict, "
        "the quantization format, effective bits per weight, aliases, and each deploy target's status.",
    )
    versions.add_argument("model_name", metavar="MODEL", help="registered model name")
    versions.set_defaults(run=cmd_versions)

    promote = commands.add_parser(
        "promote", help="turn alias changes in the MLflow registry into deploy runs (relay, poll, webhook)",
        description="Setting the deploy alias in the MLflow UI deploys that version: MLflow's webhook reaches the "
        "relay, or the scheduled poll notices the change.",
    )
    actions = promote.add_subparsers(dest="action", required=True)
    relay = actions.add_parser("relay", help="receive MLflow's registry webhooks (signature checked with "
                               "ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET) and announce alias changes as Prefect events")
    relay.add_argument("--host", default="127.0.0.1", help="address to listen on [default: 127.0.0.1]")
    relay.add_argument("--port", type=int, default=8766, help="port [default: 8766]")
    relay.set_defaults(run=cmd_promote_relay)
    poll = actions.add_parser("poll", help="one poll of every registered model's alias (the scheduled fallback where "
                              "webhooks are unavailable)")
    poll.set_defaults(run=cmd_promote_poll)
    webhook = actions.add_parser("webhook", help="create MLflow's webhook for alias changes, pointing at the relay")
    webhook.add_argument("--url", required=True, help="the relay's URL as the MLflow server reaches it")
    webhook.set_defaults(run=cmd_promote_webhook)

    watch = commands.add_parser(
        "watch", help="manage the checkpoints whose new revisions start builds",
        description="Each new revision of a watched source is announced once (Prefect event "
        "enginewright.checkpoint.updated) and the build deployment's trigger builds it with the source's spec.",
    )
    actions = watch.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="watch a Hugging Face repo id, an s3://prefix or a local directory")
    add.add_argument("source", help="Hub repo id (org/name), s3://bucket/prefix or a local directory")
    add.add_argument("--spec", type=Path, required=True, help="the build spec to build new revisions with")
    add.set_defaults(run=cmd_watch_add)
    listing = actions.add_parser("list", help="what is watched and which revisions were announced")
    listing.set_defaults(run=cmd_watch_list)
    remove = actions.add_parser("remove", help="stop watching a source")
    remove.add_argument("source", help="a watched source, as `watch list` shows it")
    remove.set_defaults(run=cmd_watch_remove)
    tick = actions.add_parser("tick", help="poll every watched source once, now (what the scheduled watcher "
                              "deployment runs)")
    tick.set_defaults(run=cmd_watch_tick)
    hub = actions.add_parser("relay", help="receive Hugging Face Hub webhooks instead of polling (secret: "
                             "ENGINEWRIGHT_HUB_WEBHOOK_SECRET)")
    hub.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 [default: 8765]")
    hub.set_defaults(run=cmd_watch_relay)


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.pull import pull_bundle

    version, manifest = pull_bundle(args.model_uri, args.dest, settings)
    print(f"{args.model_uri} (version {version}, bundle {manifest['bundle_id'][:16]}): "
          f"{len(manifest['files'])} files verified in {args.dest}")
    return 0


def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    from tasks.versions import list_versions, versions_table

    print(versions_table(args.model_name, list_versions(settings.tracking_uri, args.model_name)))
    return 0


def _webhook_secret(settings: Settings, action: str) -> str:
    secret = revealed(settings.mlflow_webhook_secret)
    if not secret:
        raise InputError(f"promote {action} needs ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET: the secret MLflow signs its "
                         "webhook deliveries with")
    return secret


def cmd_promote_relay(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.promotion import AliasStore, alias_now, make_relay
    from enginewright.registry.registry_client import registry_client
    from flows.promote import announce_alias

    secret = _webhook_secret(settings, "relay")
    require_prefect_server("promote relay")  # an event on Prefect's ephemeral API would claim the change, start nothing
    server = make_relay(args.host, args.port, secret, settings.deploy_alias, AliasStore(settings.watch_db_url),
                        alias_now(registry_client(settings.tracking_uri)), announce_alias)
    print(f"MLflow webhook relay on http://{args.host}:{args.port}/ for alias {settings.deploy_alias!r} "
          "(Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
    return 0


def cmd_promote_poll(args: argparse.Namespace, settings: Settings) -> int:
    from flows.promote import poll_aliases_flow

    require_prefect_server("promote poll")
    for name, version in poll_aliases_flow():
        print(f"announced {name}@{settings.deploy_alias} -> version {version}")
    return 0


def cmd_promote_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.mlflow_webhooks import ensure_alias_webhook

    webhook_id = ensure_alias_webhook(settings.tracking_uri, args.url, _webhook_secret(settings, "webhook"))
    print(f"MLflow webhook {webhook_id}: model_version_alias.created -> {args.url}")
    return 0


def _store(settings: Settings):
    from enginewright.registry.watchlist import WatchStore

    return WatchStore(settings.watch_db_url)


def cmd_watch_add(args: argparse.Namespace, settings: Settings) -> int:
    from tasks.revisions import revision_spec, watch_source, watched_spec_yaml

    source = watch_source(args.source)
    spec_yaml = watched_spec_yaml(args.spec)
    revision_spec(settings, spec_yaml, source, None)  # a spec that cannot build is refused now
    entry = _store(settings).add(source, spec_yaml, str(args.spec.resolve()))
    print(f"watching {entry.source} (spec {entry.spec_name}, kept as content {entry.spec_sha256[:12]})")
    return 0


def cmd_watch_remove(args: argparse.Namespace, settings: Settings) -> int:
    if not _store(settings).remove(args.source):
        raise InputError(f"{args.source!r} is not watched; `enginewright watch list` shows what is")
    print(f"no longer watching {args.source}")
    return 0


def cmd_watch_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    for entry in store.list():
        claimed = store.claimed(entry.source)
        print(f"{entry.source}  spec={entry.spec_name} ({entry.spec_sha256[:12]})  announced={len(claimed)}"
              + (f"  last={claimed[-1]}" if claimed else ""))
    return 0


def cmd_watch_tick(args: argparse.Namespace, settings: Settings) -> int:
    from flows.watch import watch_checkpoints

    require_prefect_server("watch tick")  # else the revision is claimed for good and never built
    for item in watch_checkpoints(settings):
        print(f"announced {item['source']} @ {item['revision']}")
    return 0


def cmd_watch_relay(args: argparse.Namespace, settings: Settings) -> int:
    from enginewright.registry.hub_relay import make_server
    from flows.watch import announce

    require_prefect_server("watch relay")
    server = make_server("127.0.0.1", args.port, revealed(settings.hub_webhook_secret), _store(settings), announce)
    print(f"Hub webhook relay on http://127.0.0.1:{args.port}/ (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
    return 0
