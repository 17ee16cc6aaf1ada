"""MLflow's side of promotion: the registry webhook that tells the relay an alias was set.

Webhooks need an MLflow server on a SQL store (the stack's PostgreSQL); a file or SQLite store has none, and
the scheduled `poll_aliases` flow stands in. For a relay on a private address the MLflow server needs
`MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true` (the stack sets it) and, to keep webhook secrets across restarts,
`MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`.
"""

from __future__ import annotations

from typing import Final

from enginewright.errors import RegistryError

WEBHOOK_NAME = "enginewright-promotion"
ALIAS_SET: Final = "model_version_alias.created"


def ensure_alias_webhook(tracking_uri: str, url: str, secret: str) -> str:
    """Create (or update in place) the one enginewright webhook for alias changes; returns its id."""
    from mlflow.exceptions import MlflowException

    from enginewright.registry.registry_client import registry_client

    client = registry_client(tracking_uri)
    try:
        existing = [w for w in client.list_webhooks() if w.name == WEBHOOK_NAME]
        if existing:
            return client.update_webhook(existing[0].webhook_id, url=url, events=[ALIAS_SET], secret=secret,
                                         status="ACTIVE").webhook_id
        return client.create_webhook(WEBHOOK_NAME, url, [ALIAS_SET], secret=secret,
                                     description="Alias set → enginewright promotion relay → deploy flow").webhook_id
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {tracking_uri} refused the webhook ({exc.message}); webhooks need an MLflow "
                            "server on a SQL store — without one, schedule `enginewright promote poll`") from None
