"""`watch_checkpoints`: on a schedule, find new revisions of the watched checkpoints and announce each once.

For every watched (source, spec): resolve the newest revision (tasks/revisions.py); claim it in the watch
store (enginewright/watchlist.py, exactly one claimer per revision even with several watchers); emit the
Prefect event `enginewright.checkpoint.updated` with the source, revision and spec. The build deployment's
trigger (prefect.yaml) turns the event into a build run with that revision. A source that cannot be reached
(Hub 404/500/timeout, a missing prefix) is logged and tried again on the next tick; nothing is claimed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event

from enginewright.settings import Settings
from enginewright.watchlist import WatchStore
from tasks.revisions import latest_revision

EVENT = "enginewright.checkpoint.updated"
GPU_BUILDS_LIMIT = "gpu-builds"


def announce(source: str, spec_path: str, revision: str) -> None:
    emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"enginewright.checkpoint.{source}", "enginewright.source": source},
        payload={"source": source, "revision": revision, "spec_path": spec_path},
    )


@flow(name="watch_checkpoints")
def watch_checkpoints() -> list[dict[str, str]]:
    settings = Settings()
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
        if not store.announce_once(entry.source, entry.spec_path, revision, announce):
            continue
        logger.info("%s: new revision %s announced (%s)", entry.source, revision, EVENT)
        announced.append({"source": entry.source, "revision": revision, "spec_path": entry.spec_path})
    return announced


@flow(name="build_revision")
def build_revision(spec_path: str, source: str, revision: str):
    """What the build deployment's trigger runs for an `enginewright.checkpoint.updated` event: the watched
    spec, with its source pinned to the announced revision (a Hub commit sha; local and S3 sources are
    identified by their content again when the build resolves them)."""
    from pathlib import Path

    from enginewright.spec import build_spec
    from flows.build import build_engine

    source_override = {"model": source}
    if not revision.startswith(("local:", "s3:")):
        source_override["revision"] = revision
    spec = build_spec(Settings(), Path(spec_path), {"source": source_override})
    # One build per GPU: a slot of the global concurrency limit `gpu-builds` (sized to the GPUs; where it does
    # not exist, e.g. on Prefect's ephemeral API, this does not wait).
    with concurrency(GPU_BUILDS_LIMIT, occupy=1, strict=False):
        return build_engine(spec)
