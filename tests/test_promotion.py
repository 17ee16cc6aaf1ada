"""Alias changes → announcements, exactly once: the alias store's claims, the MLflow webhook relay over real HTTP
(signatures as MLflow's own delivery code makes them), and the poll fallback against a real MLflow store."""

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

from enginewright.promotion import AliasStore, make_relay, mlflow_signature, poll_aliases
from enginewright.registry_client import registry_client
from enginewright.settings import Settings
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

    with pytest.raises(ConnectionError):
        store.announce_once("m", "production", "3", broken)
    seen = []
    assert store.announce_once("m", "production", "3", lambda *a: seen.append(a))
    assert seen == [("m", "production", "3")]


def test_our_signature_is_mlflows() -> None:
    body = json.dumps({"entity": "model_version_alias", "action": "created"})
    assert mlflow_signature(SECRET, "d-1", "1700000000", body.encode()) == \
        _generate_hmac_signature(SECRET, "d-1", "1700000000", body)


@pytest.fixture
def relay(store: AliasStore):
    announced: list[tuple[str, str, str]] = []
    server = make_relay("127.0.0.1", 0, SECRET, "production", store, lambda *a: announced.append(a))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", announced
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
    url, announced = relay
    assert deliver(url, alias_set("chat", "production", "4")) == (
        200, "chat@production -> version 4: announced (enginewright.alias.set)")
    assert deliver(url, alias_set("chat", "production", "4"))[1].endswith("already announced")  # MLflow retried
    assert deliver(url, alias_set("chat", "candidate", "5")) == (200, "ignored: alias 'candidate' is not 'production'")
    assert deliver(url, {"entity": "model_version", "action": "created", "data": {}})[1].startswith("ignored")
    assert announced == [("chat", "production", "4")]


@pytest.mark.parametrize("kwargs, message", [
    ({"secret": "not-the-secret"}, "bad X-MLflow-Signature"),
    ({"signature": "v1,AAAA"}, "bad X-MLflow-Signature"),
    ({"age_s": 3600}, "a replayed or delayed delivery is refused"),
])
def test_the_relay_refuses_unsigned_forged_or_replayed_deliveries(relay, kwargs, message) -> None:
    url, announced = relay
    status, answer = deliver(url, alias_set("chat", "production", "9"), **kwargs)
    assert status == 401 and answer.endswith(message), answer
    assert announced == []


def test_the_relay_refuses_a_delivery_without_signature_headers(relay) -> None:
    url, announced = relay
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
