"""One way to open the MLflow registry: `registry_client(uri)`, tracking and registry on the same store.

MLflow creates a SQLite store's tables (and runs its Alembic migrations) on first use, without a lock of its
own in the store constructors. Two processes opening the same fresh `sqlite:///` file at once, as
`enginewright matrix` does with one build process per variant, then migrate it twice and one of them dies
with `table _alembic_tmp_… already exists`. For SQLite stores the first use here therefore runs under an
exclusive lock on a file beside the database. Server and PostgreSQL stores need none: the server (or
`mlflow db upgrade`) owns the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

if TYPE_CHECKING:  # mlflow is imported where a client is made: ~1.3 s that a fully cached build never needs
    from mlflow.tracking import MlflowClient

_SQLITE = "sqlite:///"


def registry_client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    if not tracking_uri.startswith(_SQLITE):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    database = Path(tracking_uri.removeprefix(_SQLITE))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(database.with_name(database.name + ".init-lock")):
        # the client builds its tracking store at once and its registry store when first used
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.search_registered_models(max_results=1)
    return client
