"""From an alias set in the MLflow UI to a Prefect event, exactly once per alias change.

Two ways in, one way out:
- push: MLflow's model-registry webhook (event `model_version_alias.created`) POSTs to the relay
  (`enginewright promote relay`). The relay checks `X-MLflow-Signature` — `v1,` + base64 HMAC-SHA256 of
  `{delivery id}.{timestamp}.{raw body}` under the webhook's secret, compared in constant time — and refuses
  a timestamp more than five minutes old (a replayed delivery);
- poll: where MLflow has no webhooks (a file or SQLite store, or a relay that was down), the `promote-poll`
  deployment reads every registered model's alias on a schedule (`poll_aliases`).

Both *claim* the change in the alias store before announcing it: the row (model, alias) → version is replaced
only when the version differs, in one conditional upsert, so of a webhook and a poll that see the same change
exactly one announces it, and the same alias change never deploys twice. Moving the alias back to an earlier
version is a new change and deploys again. A failed announcement releases the claim: the next poll retries.

The announcement is the Prefect event `enginewright.alias.set` (payload: name, alias, version); the `deploy`
deployment's trigger in prefect.yaml turns it into a `deploy_version` run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from http.server import ThreadingHTTPServer

from sqlalchemy import Column, DateTime, String, Table, delete, func, select

from enginewright.store_db import METADATA, announce_claimed, dialect_of, open_engine
from enginewright.webhook_server import make_json_server, parse_json

ALIAS_EVENT = "enginewright.alias.set"
DEFAULT_ALIAS = "production"
SIGNATURE_MAX_AGE_S = 300
Announce = Callable[[str, str, str], None]  # (model name, alias, version)

ALIAS_STATE = Table(
    "enginewright_alias_state", METADATA,
    Column("model", String(512), primary_key=True),
    Column("alias", String(256), primary_key=True),
    Column("version", String(32), nullable=False),
    Column("changed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)


class AliasStore:
    """The last announced version of each (model, alias)."""

    def __init__(self, url: str):
        self.url = url

    @cached_property
    def engine(self):
        return open_engine(self.url)

    def claim(self, model: str, alias: str, version: str) -> bool:
        """True for exactly one caller per change of (model, alias) to `version`."""
        insert = dialect_of(self.engine).insert(ALIAS_STATE).values(model=model, alias=alias, version=version)
        upsert = insert.on_conflict_do_update(
            index_elements=[ALIAS_STATE.c.model, ALIAS_STATE.c.alias],
            set_={"version": insert.excluded.version, "changed_at": func.now()},
            where=ALIAS_STATE.c.version != insert.excluded.version,
        ).returning(ALIAS_STATE.c.version)
        with self.engine.begin() as connection:
            return connection.execute(upsert).first() is not None

    def release(self, model: str, alias: str, version: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(ALIAS_STATE).where(
                (ALIAS_STATE.c.model == model) & (ALIAS_STATE.c.alias == alias) & (ALIAS_STATE.c.version == version)))

    def announced(self, model: str, alias: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(select(ALIAS_STATE.c.version).where(
                (ALIAS_STATE.c.model == model) & (ALIAS_STATE.c.alias == alias))).scalar()

    def announce_once(self, model: str, alias: str, version: str, announce: Announce) -> bool:
        return announce_claimed(lambda: self.claim(model, alias, version),
                                lambda: self.release(model, alias, version),
                                lambda: announce(model, alias, version))


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def signature_problem(headers: Mapping[str, str], body: bytes, secret: str, now: float | None = None) -> str | None:
    """None when the request is MLflow's, signed with `secret` in the last five minutes; else what is wrong."""
    delivery_id = headers.get("X-MLflow-Delivery-Id") or ""
    timestamp = headers.get("X-MLflow-Timestamp") or ""
    given = headers.get("X-MLflow-Signature") or ""
    if not (delivery_id and timestamp and given):
        return "missing X-MLflow-Signature, X-MLflow-Delivery-Id or X-MLflow-Timestamp"
    if not hmac.compare_digest(given.encode(), mlflow_signature(secret, delivery_id, timestamp, body).encode()):
        return "bad X-MLflow-Signature"
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return "X-MLflow-Timestamp is not a Unix time"
    if abs(age) > SIGNATURE_MAX_AGE_S:
        return f"X-MLflow-Timestamp is {age:.0f} s off; a replayed or delayed delivery is refused"
    return None


def handle_mlflow_event(payload: dict, alias: str, store: AliasStore, announce: Announce) -> tuple[int, str]:
    """(HTTP status, message) for one verified delivery. Anything but `alias` being set is acknowledged and ignored,
    so MLflow does not retry it."""
    if (payload.get("entity"), payload.get("action")) != ("model_version_alias", "created"):
        return 200, f"ignored: {payload.get('entity')}.{payload.get('action')}"
    data = payload.get("data") or {}
    name, set_alias, version = data.get("name"), data.get("alias"), data.get("version")
    if set_alias != alias:
        return 200, f"ignored: alias {set_alias!r} is not {alias!r}"
    if not name or not version:
        return 400, "model_version_alias.created without name or version"
    if store.announce_once(str(name), alias, str(version), announce):
        return 200, f"{name}@{alias} -> version {version}: announced ({ALIAS_EVENT})"
    return 200, f"{name}@{alias} -> version {version}: already announced"


def make_relay(host: str, port: int, secret: str, alias: str, store: AliasStore,
               announce: Announce) -> ThreadingHTTPServer:
    if not secret:
        raise ValueError("the MLflow webhook relay needs a secret (ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET)")

    def handle(headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        problem = signature_problem(headers, body, secret)
        if problem is not None:
            return 401, problem
        payload = parse_json(body)
        if payload is None:
            return 400, "body is not a JSON object"
        return handle_mlflow_event(payload, alias, store, announce)

    return make_json_server(host, port, handle)


def poll_aliases(client, alias: str, store: AliasStore, announce: Announce) -> list[tuple[str, str]]:
    """Announce every registered model whose `alias` points at a version not announced yet; (name, version) each."""
    announced = []
    for model in client.search_registered_models():
        version = (model.aliases or {}).get(alias)  # MLflow gives {alias: version}
        if version is not None and store.announce_once(model.name, alias, str(version), announce):
            announced.append((model.name, str(version)))
    return announced

