"""`watch_checkpoints`: on a schedule, find new revisions of the watched checkpoints and announce each once.

For every watch (source, spec content): resolve the newest revision (tasks/revisions.py); claim it in the watch
store (enginewright/registry/watchlist.py, exactly one claimer per revision even with several watchers); emit the
Prefect event `enginewright.checkpoint.updated` with the source, revision and the spec itself. The build
deployment's trigger (prefect.yaml) turns the event into a `build_revision` run with that revision. A source
that cannot be reached (Hub 404/500/timeout, a missing prefix, an empty directory) is logged and tried again on
the next tick; nothing is claimed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from enginewright.config.settings import Settings, load_settings
from enginewright.ops.process_env import prepare_process
from enginewright.registry.events import announce_event
from enginewright.registry.watchlist import WatchStore
from tasks.revisions import latest_revision, revision_spec
from tasks.variants import publish_build_report, publish_failure_report

EVENT = "enginewright.checkpoint.updated"
GPU_BUILDS_LIMIT = "gpu-builds"


def announce(source: str, spec_yaml: str, revision: str) -> None:
    announce_event(EVENT, {"prefect.resource.id": f"enginewright.checkpoint.{source}", "enginewright.source": source},
                   {"source": source, "revision": revision, "spec_yaml": spec_yaml})


@flow(name="watch_checkpoints")
def watch_checkpoints(settings: Settings | None = None) -> list[dict[str, str]]:
    settings = settings or load_settings()
    prepare_process(settings)
    logger = get_run_logger()
    store = WatchStore(settings.watch_db_url)
    announced = []
    for entry in store.list():
        try:
            revision = latest_revision(entry.source, settings.hub_endpoint, settings.s3_endpoint_url,
                                       settings.watch_timeout_s)
        except Exception as exc:  # any failure to reach a source: try again next tick
            logger.warning("%s: %s: %s; trying again on the next tick", entry.source, type(exc).__name__,
                           str(exc).splitlines()[0] if str(exc) else "")
            continue
        if not store.announce_once(entry, revision, announce):
            continue
        logger.info("%s: new revision %s announced (%s)", entry.source, revision, EVENT)
        announced.append({"source": entry.source, "revision": revision, "spec": entry.spec_name})
    return announced


@flow(name="build_revision")
def build_revision(spec_yaml: str = "", source: str | None = None, revision: str | None = None):
    """What the build deployment runs: for an `enginewright.checkpoint.updated` event, the watched spec with its
    source pinned to the announced revision; by hand with no parameters, the embedded default build."""
    from flows.build import build_engine

    settings = load_settings()
    prepare_process(settings)
    spec = revision_spec(settings, spec_yaml, source, revision)
    # One build per GPU: a slot of the global concurrency limit `gpu-builds` (sized to the GPUs; where it does
    # not exist, e.g. on Prefect's ephemeral API, this does not wait).
    # The build's report is published either way: what a matrix in service mode reads (tasks/variants.py).
    with concurrency(GPU_BUILDS_LIMIT, occupy=1, strict=False):
        try:
            outcome = build_engine(spec, settings)
        except Exception as exc:
            publish_failure_report(exc)
            raise
    publish_build_report(outcome)
    return outcome
