"""`poll_aliases`: the scheduled fallback of the MLflow webhook (enginewright.registry.promotion).

Every tick reads each registered model's deploy alias (`production` by default) and announces a version not
announced yet as the Prefect event `enginewright.alias.set`; the `deploy` deployment's trigger turns it into a
`deploy_version` run. The webhook relay claims changes in the same store, so a change seen by both deploys once.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from enginewright.config.settings import Settings
from enginewright.ops.process_env import prepare_process
from enginewright.registry.events import announce_event
from enginewright.registry.promotion import ALIAS_EVENT, AliasStore, poll_aliases
from enginewright.registry.registry_client import registry_client


def announce_alias(name: str, alias: str, version: str) -> None:
    announce_event(ALIAS_EVENT, {"prefect.resource.id": f"mlflow.registered-model.{name}", "mlflow.model": name},
                   {"name": name, "alias": alias, "version": version})


@flow(name="poll_aliases")
def poll_aliases_flow() -> list[tuple[str, str]]:
    settings = Settings()
    prepare_process(settings)
    announced = poll_aliases(registry_client(settings.tracking_uri), settings.deploy_alias,
                             AliasStore(settings.watch_db_url), announce_alias)
    for name, version in announced:
        get_run_logger().info("%s@%s -> version %s announced (%s)", name, settings.deploy_alias, version, ALIAS_EVENT)
    return announced
