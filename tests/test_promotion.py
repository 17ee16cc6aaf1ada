"""Alias changes → announcements, exactly once: the alias store's claims and lock (SQLite and PostgreSQL), the MLflow
webhook relay over real HTTP (signatures as MLflow's own delivery code makes them), and the poll fallback against a
real MLflow store — including a poll that listed the alias a moment before a rollback moved it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from enginewright.config.settings import Settings
from enginewright.registry.promotion import AliasStore, make_relay, mlflow_signature, poll_aliases
from enginewright.registry.registry_client import registry_client
from tasks.deploy import move_alias_back
from tests.registered_bundle import register_bundle

SECRET = "whsec-" + uuid.uuid4().hex


@pytest.fixture
def store(tmp_path: Path) -> AliasStore:
    return AliasStore(f"sqlite:///{tmp_path / 'watch.db'}")


def test_each_alias_change_is_claimed_once_and_a_move_back_is_a_new_change(store: AliasStore) -> None:
    assert store.claim("m", "production", "1")
    assert not store.claim("m", "production", "1")
    assert store.claim("m", "production", "2")
    assert store.claim("m", "production", "1")  # a rollback deploys again
    assert store.claim("m", "staging", "1") and store.claim("other", "production", "1")
    assert store.announced("m", "production") == "1"


def test_concurrent_claims_of_one_change_have_one_winner(store: AliasStore) -> None:
    store.claim("m", "production", "1")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(store.claim("m", "production", "7"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_failed_announcement_is_retried_by_the_next_caller(store: AliasStore) -> None:
    def broken(*_):
        raise ConnectionError("Prefect API down")

    def now(*_):
        return "3"

    with pytest.raises(ConnectionError):
        store.announce_current("m", "production", now, broken)
    seen = []
    assert store.announce_current("m", "production", now, lambda *a: seen.append(a)) == "3"
    assert seen == [("m", "production", "3")]


def test_whoever_holds_an_alias_makes_the_others_wait(store_url: str) -> None:
    """A rollback holding (model, alias) while it moves the alias: a poll reading the alias meanwhile waits for
    it, then finds the move recorded. Against SQLite (one writer) and PostgreSQL (an advisory lock per alias)."""
    store, other = AliasStore(store_url), AliasStore(store_url)
    store.claim("m", "production", "2")
    other.claim("m", "staging", "5")  # tables exist before the race; another alias is not held
    events: list[str] = []
    holding = threading.Event()

    def roll_back() -> None:
        with store.holding("m", "production") as held:
            holding.set()
            time.sleep(1.0)
            held.record("1")
            events.append("moved to 1")

    def poll() -> None:
        holding.wait()
        events.append(f"poll announced {other.announce_current('m', 'production', lambda *_: '1', lambda *a: None)}")

    threads = [threading.Thread(target=roll_back), threading.Thread(target=poll)]
    for thread in threads:
        thread.start()
    holding.wait()
    assert other.claim("m", "staging", "6")  # another alias is not held (SQLite makes it wait for the file's lock)
    for thread in threads:
        thread.join()
    assert events == ["moved to 1", "poll announced None"]
    assert store.announced("m", "production") == "1"


def test_our_signature_is_mlflows() -> None:
    body = json.dumps({"entity": "model_version_alias", "action": "created"})
    assert mlflow_signature(SECRET, "d-1", "1700000000", body.encode()) == \
        _generate_hmac_signature(SECRET, "d-1", "1700000000", body)


@pytest.fixture
def relay(store: AliasStore):
    """(url, what it announced, what the aliases point at: {(model, alias): version}, as MLflow would answer)."""
    announced: list[tuple[str, str, str]] = []
    aliases: dict[tuple[str, str], str] = {}
    server = make_relay("127.0.0.1", 0, SECRET, "production", store, lambda *key: aliases.get(key),
                        lambda *a: announced.append(a))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", announced, aliases
    server.shutdown()


def deliver(url: str, payload: dict, secret: str = SECRET, age_s: float = 0, signature: str | None = None):
    """POST as MLflow's delivery code does (mlflow/webhooks/delivery.py)."""
    body = json.dumps(payload)
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time() - age_s))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": timestamp,
               "X-MLflow-Signature": signature or _generate_hmac_signature(secret, delivery_id, timestamp, body)}
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())["message"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["message"]


def alias_set(name: str, alias: str, version: str) -> dict:
    return {"entity": "model_version_alias", "action": "created", "timestamp": "2026-11-26T00:00:00+00:00",
            "data": {"name": name, "alias": alias, "version": version}}


def test_the_relay_announces_a_signed_alias_change_once(relay) -> None:
    url, announced, aliases = relay
    aliases[("chat", "production")] = "4"
    assert deliver(url, alias_set("chat", "production", "4")) == (
        200, "chat@production -> version 4: announced (enginewright.alias.set)")
    assert "already announced" in deliver(url, alias_set("chat", "production", "4"))[1]  # MLflow retried
    assert deliver(url, alias_set("chat", "candidate", "5")) == (200, "ignored: alias 'candidate' is not 'production'")
    assert deliver(url, {"entity": "model_version", "action": "created", "data": {}})[1].startswith("ignored")
    assert announced == [("chat", "production", "4")]


def test_a_late_delivery_announces_where_the_alias_points_now(relay) -> None:
    """MLflow delivers in the background: a delivery for version 4 can arrive after the alias moved to 5 (or was
    moved back by a rollback, which recorded it). The relay announces what the alias points at, once."""
    url, announced, aliases = relay
    aliases[("chat", "production")] = "5"
    assert deliver(url, alias_set("chat", "production", "4")) == (
        200, "chat@production -> version 5: announced (enginewright.alias.set)")
    assert "already announced, or the alias has moved on" in deliver(url, alias_set("chat", "production", "5"))[1]
    del aliases[("chat", "production")]  # removed since: nothing to deploy
    assert "already announced" in deliver(url, alias_set("chat", "production", "6"))[1]
    assert announced == [("chat", "production", "5")]


@pytest.mark.parametrize("kwargs, message", [
    ({"secret": "not-the-secret"}, "bad X-MLflow-Signature"),
    ({"signature": "v1,AAAA"}, "bad X-MLflow-Signature"),
    ({"age_s": 3600}, "a replayed or delayed delivery is refused"),
])
def test_the_relay_refuses_unsigned_forged_or_replayed_deliveries(relay, kwargs, message) -> None:
    url, announced, _ = relay
    status, answer = deliver(url, alias_set("chat", "production", "9"), **kwargs)
    assert status == 401 and answer.endswith(message), answer
    assert announced == []


def test_the_relay_refuses_a_delivery_without_signature_headers(relay) -> None:
    url, announced, _ = relay
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 401 and announced == []


def test_the_poll_announces_each_alias_change_once(settings: Settings, tmp_path: Path, store: AliasStore) -> None:
    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "polled", fmt="fp8")
    v2 = register_bundle(settings, tmp_path / "b", "polled", fmt="int8_sq")
    register_bundle(settings, tmp_path / "b", "no-alias", fmt="fp8")
    announced: list[tuple[str, str, str]] = []

    def poll():
        return poll_aliases(client, "production", store, lambda *a: announced.append(a))

    assert poll() == []
    client.set_registered_model_alias("polled", "production", v1.version)
    assert poll() == [("polled", v1.version)]
    assert poll() == []
    client.set_registered_model_alias("polled", "production", v2.version)
    assert store.claim("polled", "production", v2.version)  # the webhook relay saw it first
    assert poll() == []
    assert announced == [("polled", "production", v1.version)]


def test_a_poll_that_listed_the_alias_before_a_rollback_announces_nothing(settings: Settings, tmp_path: Path,
                                                                          store: AliasStore) -> None:
    """CI saw it (1, 1, 2, 2 deploy runs for two promotions): a scheduled poll listed `production` on version 2, a
    verification rolled it back to 1 before the poll claimed, and the poll announced 2 — then 1 on its next tick.
    Here the rollback runs between the poll's listing and its claim; the poll must announce nothing."""
    client = registry_client(settings.tracking_uri)
    v1 = register_bundle(settings, tmp_path / "b", "raced", fmt="fp8")
    v2 = register_bundle(settings, tmp_path / "b", "raced", fmt="int8_sq")
    client.set_registered_model_alias("raced", "production", v1.version)
    assert store.claim("raced", "production", v1.version)
    client.set_registered_model_alias("raced", "production", v2.version)
    assert store.claim("raced", "production", v2.version)  # the webhook announced the promotion of v2

    class ListsThenRollsBack:
        """The registry as the poll sees it: the listing taken, then the rollback, then the rest."""

        def __getattr__(self, name: str):
            return getattr(client, name)

        def search_registered_models(self):
            listed = client.search_registered_models()
            assert move_alias_back(client, store, "raced", "production", v2.version, v1.version)
            return listed

    announced: list[tuple[str, str, str]] = []
    assert poll_aliases(ListsThenRollsBack(), "production", store, lambda *a: announced.append(a)) == []
    assert poll_aliases(client, "production", store, lambda *a: announced.append(a)) == []  # the next tick
    assert announced == []
    assert store.announced("raced", "production") == v1.version
