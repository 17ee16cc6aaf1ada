"""From an alias set in the MLflow UI to a Prefect event, exactly once per alias change.

Two ways in, one way out:
- push: MLflow's model-registry webhook (event `model_version_alias.created`) POSTs to the relay
  (`enginewright promote relay`). The relay checks `X-MLflow-Signature` — `v1,` + base64 HMAC-SHA256 of
  `{delivery id}.{timestamp}.{raw body}` under the webhook's secret, compared in constant time — and refuses
  a timestamp more than five minutes old (a replayed delivery);
- poll: where MLflow has no webhooks (a file or SQLite store, or a relay that was down), the `promote-poll`
  deployment reads every registered model's alias on a schedule (`poll_aliases`).

Both *claim* the change in the alias store before announcing it, and what they claim is what the alias points at
*now*: under a lock on (model, alias) they read the alias from MLflow and replace the row (model, alias) → version
only when it differs (`AliasStore.announce_current`). A delivery's or a poll's listing is only a hint that
something changed, so of a webhook and a poll that see the same change exactly one announces it, and neither
announces a version the alias left while they were on their way — a poll that listed `production` on version 2 a
moment before a rollback moved it back to 1 announced 2, then 1 again on its next tick, before the lock
(two redundant deploy runs on CI). Whoever moves the alias itself (a rollback, a refused promotion: `move_alias`)
records the move under the same lock, so the webhook and the poll that see it announce nothing. Moving the alias
back to an earlier version by hand is a new change and deploys again. A failed announcement releases the claim:
the next poll retries.

The announcement is the Prefect event `enginewright.alias.set` (payload: name, alias, version); the `deploy`
deployment's trigger in prefect.yaml turns it into a `deploy_version` run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from http.server import ThreadingHTTPServer

from sqlalchemy import Column, Connection, DateTime, String, Table, delete, func, select

from enginewright.registry.store_db import (
    METADATA,
    announce_claimed,
    dialect_of,
    hold_until_commit,
    open_engine,
)
from enginewright.registry.webhook_server import make_json_server, parse_json

ALIAS_EVENT = "enginewright.alias.set"
DEFAULT_ALIAS = "production"
SIGNATURE_MAX_AGE_S = 300
Announce = Callable[[str, str, str], None]  # (model name, alias, version)
AliasNow = Callable[[str, str], "str | None"]  # (model name, alias) -> the version it points at in MLflow now

ALIAS_STATE = Table(
    "enginewright_alias_state", METADATA,
    Column("model", String(512), primary_key=True),
    Column("alias", String(256), primary_key=True),
    Column("version", String(32), nullable=False),
    Column("changed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)


@dataclass(frozen=True)
class HeldAlias:
    """(model, alias)'s row inside a transaction that holds its lock (`AliasStore.holding`)."""

    connection: Connection
    model: str
    alias: str

    def _where(self):
        return (ALIAS_STATE.c.model == self.model) & (ALIAS_STATE.c.alias == self.alias)

    def announced(self) -> str | None:
        return self.connection.execute(select(ALIAS_STATE.c.version).where(self._where())).scalar()

    def record(self, version: str) -> bool:
        """`version` is the announced one from now on; False when it already was."""
        insert = dialect_of(self.connection).insert(ALIAS_STATE).values(model=self.model, alias=self.alias,
                                                                          version=version)
        upsert = insert.on_conflict_do_update(
            index_elements=[ALIAS_STATE.c.model, ALIAS_STATE.c.alias],
            set_={"version": insert.excluded.version, "changed_at": func.now()},
            where=ALIAS_STATE.c.version != insert.excluded.version,
        ).returning(ALIAS_STATE.c.version)
        return self.connection.execute(upsert).first() is not None

    def forget(self, version: str) -> None:
        """Nothing announced any more, if `version` was (setting the alias to it again announces it again)."""
        self.connection.execute(delete(ALIAS_STATE).where(self._where() & (ALIAS_STATE.c.version == version)))


class AliasStore:
    """The last announced version of each (model, alias)."""

    def __init__(self, url: str):
        self.url = url

    @cached_property
    def engine(self):
        return open_engine(self.url)

    @contextmanager
    def holding(self, model: str, alias: str) -> Iterator[HeldAlias]:
        """One transaction holding (model, alias) until it ends: who reads or moves the alias in MLflow and records
        it does both in here, so no caller records what the alias was before another caller moved it."""
        with self.engine.begin() as connection:
            hold_until_commit(connection, ALIAS_STATE, f"{model}\0{alias}")
            yield HeldAlias(connection, model, alias)

    def claim(self, model: str, alias: str, version: str) -> bool:
        """True for exactly one caller per change of (model, alias) to `version`."""
        with self.holding(model, alias) as held:
            return held.record(version)

    def release(self, model: str, alias: str, version: str) -> None:
        with self.holding(model, alias) as held:
            held.forget(version)

    def announced(self, model: str, alias: str) -> str | None:
        with self.engine.connect() as connection:
            return HeldAlias(connection, model, alias).announced()

    def announce_current(self, model: str, alias: str, alias_now: AliasNow, announce: Announce) -> str | None:
        """Announce the version `alias` points at now (read under the lock), unless it was announced already;
        returns the version announced, or None. Prefect is told after the lock is let go, and a failed
        announcement releases the claim."""
        claimed: list[str] = []

        def claim() -> bool:
            with self.holding(model, alias) as held:
                version = alias_now(model, alias)
                if version is None or not held.record(version):
                    return False
                claimed.append(version)
                return True

        if announce_claimed(claim, lambda: self.release(model, alias, claimed[0]),
                            lambda: announce(model, alias, claimed[0])):
            return claimed[0]
        return None


def alias_now(client) -> AliasNow:
    """(model, alias) -> the version `alias` points at in the registry behind `client` now; None when it is unset."""
    from mlflow.exceptions import MlflowException

    def read(model: str, alias: str) -> str | None:
        try:
            return str(client.get_model_version_by_alias(model, alias).version)
        except MlflowException:  # no such alias (removed) or model (deleted)
            return None

    return read


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


def handle_mlflow_event(payload: dict, alias: str, store: AliasStore, alias_now: AliasNow,
                        announce: Announce) -> tuple[int, str]:
    """(HTTP status, message) for one verified delivery. Anything but `alias` being set is acknowledged and ignored,
    so MLflow does not retry it. The delivery names the version; what is announced is the version the alias points
    at now (a delivery can arrive after a rollback moved the alias on)."""
    if (payload.get("entity"), payload.get("action")) != ("model_version_alias", "created"):
        return 200, f"ignored: {payload.get('entity')}.{payload.get('action')}"
    data = payload.get("data") or {}
    name, set_alias, version = data.get("name"), data.get("alias"), data.get("version")
    if set_alias != alias:
        return 200, f"ignored: alias {set_alias!r} is not {alias!r}"
    if not name or not version:
        return 400, "model_version_alias.created without name or version"
    announced = store.announce_current(str(name), alias, alias_now, announce)
    if announced is not None:
        return 200, f"{name}@{alias} -> version {announced}: announced ({ALIAS_EVENT})"
    return 200, f"{name}@{alias} -> version {version}: already announced, or the alias has moved on"


def make_relay(host: str, port: int, secret: str, alias: str, store: AliasStore, alias_now: AliasNow,
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
        return handle_mlflow_event(payload, alias, store, alias_now, announce)

    return make_json_server(host, port, handle)


def poll_aliases(client, alias: str, store: AliasStore, announce: Announce) -> list[tuple[str, str]]:
    """Announce every registered model whose `alias` points at a version not announced yet; (name, version) each.
    The listing only says which models have the alias; the version is read again under the lock."""
    announced = []
    now = alias_now(client)
    for model in client.search_registered_models():
        if alias in (model.aliases or {}):  # MLflow gives {alias: version}
            version = store.announce_current(model.name, alias, now, announce)
            if version is not None:
                announced.append((model.name, version))
    return announced

