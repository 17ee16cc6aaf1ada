"""The watcher: revisions of local, S3 and Hub sources, exactly-once claims (also between processes), and a
tick against a local HTTP stand-in for the Hub's model-info endpoint (the Hub cannot be reached from here)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from enginewright.config.settings import Settings
from enginewright.errors import CheckpointError, InputError
from enginewright.registry.watchlist import WatchStore
from tasks.revisions import latest_revision


class HubStandIn:
    """Answers GET /api/models/<org>/<name> like the Hub's model-info endpoint: {"id", "sha", "lastModified"};
    `mode` switches it to a 404 (RepoNotFound), a 500, or a reply slower than the client's timeout."""

    def __init__(self) -> None:
        self.sha, self.mode, self.requests = "a" * 40, "ok", 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                stand_in.requests += 1
                if stand_in.mode == "slow":
                    time.sleep(3)  # the client gave up meanwhile: answering would only raise BrokenPipeError
                    return
                if stand_in.mode == "404":
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.end_headers()
                    return
                if stand_in.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                body = json.dumps({"id": self.path.split("/api/models/")[1], "sha": stand_in.sha,
                                   "lastModified": "2026-11-26T00:00:00.000Z"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # only the stand-in is reached
    stand_in = HubStandIn()
    yield stand_in
    stand_in.server.shutdown()


@pytest.fixture
def prefect_server():
    """A Prefect API server of its own (Prefect's temporary server, started explicitly) as PREFECT_API_URL:
    `watch tick` refuses to announce without one."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start(timeout=90)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server.api_url
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # the run logs reach this server before it stops
    server.stop()


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("source: {model: org/model}\nquantization: {format: fp8}\n")
    return path


def test_local_revisions_follow_the_content(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    first = latest_revision(str(tmp_path / "m"), None, None)
    assert first == latest_revision(str(tmp_path / "m"), None, None) and first.startswith("local:")
    (tmp_path / "m" / "config.json").write_text('{"x": 1}')
    assert latest_revision(str(tmp_path / "m"), None, None) != first
    with pytest.raises(CheckpointError, match="is not a directory"):
        latest_revision(str(tmp_path / "missing"), None, None)
    (tmp_path / "empty").mkdir()  # before: the hash of an empty tree, announced and built as a revision
    with pytest.raises(CheckpointError, match="holds no config.json"):
        latest_revision(str(tmp_path / "empty"), None, None)


def test_watch_add_keeps_an_absolute_checkpoint_path_and_the_spec_content(
        tmp_path: Path, tiny_model: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path would mean another directory on the worker that polls it; a spec path another file (or
    none) there: the watch keeps the absolute checkpoint path and the spec's content."""
    from enginewright.cli.main import main

    monkeypatch.chdir(tiny_model.parent)
    spec = spec_file(tmp_path)
    assert main(["watch", "add", tiny_model.name, "--spec", str(spec)]) == 0
    spec.write_text("quantization: {format: int8_sq}\n")  # edited after the watch was added: changes nothing
    [entry] = WatchStore(settings.watch_db_url).list()
    assert entry.source == str(tiny_model) and entry.spec_name == str(spec)
    assert "format: fp8" in entry.spec_yaml and entry.spec_sha256 == hashlib.sha256(entry.spec_yaml.encode()).hexdigest()


def test_an_announcement_without_a_prefect_server_fails_and_releases_its_claim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: on Prefect's ephemeral API the event reached no deployment, and the revision stayed claimed for
    good, never built. Now the announcement fails loudly and the claim is released for the next tick."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.watch as watch

    store = WatchStore(f"sqlite:///{tmp_path / 'watch.db'}")
    entry = store.add("org/model", "quantization: {format: fp8}\n", "spec.yaml")
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with pytest.raises(InputError, match="needs a Prefect server"):
            store.announce_once(entry, "a" * 40, watch.announce)
    assert store.claimed("org/model") == []


def test_hub_revision_is_the_model_info_sha(hub: HubStandIn) -> None:
    assert latest_revision("org/model", hub.url, None) == "a" * 40
    hub.mode = "404"
    with pytest.raises(Exception, match="404"):
        latest_revision("org/model", hub.url, None)


def test_a_revision_is_claimed_once_and_released_when_unannounced(tmp_path: Path) -> None:
    store = WatchStore(f"sqlite:///{tmp_path / 'watch.db'}")
    spec = "5" * 64  # the spec's sha256
    assert store.claim("org/model", spec, "r1") and not store.claim("org/model", spec, "r1")
    store.release("org/model", spec, "r1")
    assert store.claim("org/model", spec, "r1")
    assert store.claim("org/model", spec, "r2") and store.claimed("org/model") == ["r1", "r2"]


def _claim_all(url: str, spec: str, revisions: list[str], barrier, results) -> None:
    store = WatchStore(url)
    store.engine  # noqa: B018 (create the tables before the race starts)
    barrier.wait()
    results.put([r for r in revisions if store.claim("org/model", spec, r)])


def test_two_watchers_racing_claim_each_revision_exactly_once(store_url: str) -> None:
    revisions = [f"r{i}" for i in range(40)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    spec = "5" * 64  # the spec's sha256
    workers = [context.Process(target=_claim_all, args=(store_url, spec, revisions, barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    won = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(won[0] + won[1]) == sorted(revisions)  # every revision claimed, none twice


def test_a_tick_announces_a_new_sha_once_and_retries_an_unreachable_hub(
    hub: HubStandIn, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, prefect_server
) -> None:
    import flows.watch as watch
    from enginewright.cli.main import main

    monkeypatch.setenv("ENGINEWRIGHT_HUB_ENDPOINT", hub.url)
    monkeypatch.setenv("ENGINEWRIGHT_WATCH_TIMEOUT_S", "1")  # the stand-in's slow mode answers after 3 s
    events: list[tuple[str, str]] = []
    real_announce = watch.announce

    def recording_announce(source: str, spec_yaml: str, revision: str) -> None:
        real_announce(source, spec_yaml, revision)  # the real Prefect event, to a real (temporary) Prefect server
        events.append((source, revision))

    monkeypatch.setattr(watch, "announce", recording_announce)
    assert main(["watch", "add", "org/model", "--spec", str(spec_file(tmp_path))]) == 0

    assert main(["watch", "tick"]) == 0 and events == [("org/model", "a" * 40)]
    assert main(["watch", "tick"]) == 0 and len(events) == 1  # the same sha: nothing
    for failure in ("404", "500", "slow"):
        hub.mode, hub.sha = failure, "b" * 40
        started = time.monotonic()
        assert main(["watch", "tick"]) == 0 and len(events) == 1, failure  # logged, nothing claimed
        assert time.monotonic() - started < 60
    hub.mode = "ok"
    assert main(["watch", "tick"]) == 0 and events[-1] == ("org/model", "b" * 40) and len(events) == 2
    capsys.readouterr()
    assert main(["watch", "list"]) == 0
    assert f"announced=2  last={'b' * 40}" in capsys.readouterr().out
    assert main(["watch", "remove", "org/model"]) == 0 and main(["watch", "remove", "org/model"]) == 2


def test_the_hub_webhook_relay_checks_the_secret_and_announces_once(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from enginewright.registry.hub_relay import make_server

    store = WatchStore(f"sqlite:///{tmp_path / 'watch.db'}")
    store.add("org/model", spec_file(tmp_path).read_text(), "spec.yaml")
    announced: list[tuple[str, str]] = []
    server = make_server("127.0.0.1", 0, "s3cret", store, lambda source, spec, rev: announced.append((source, rev)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"

    def post(payload: dict, secret: str | None) -> tuple[int, str]:
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"X-Webhook-Secret": secret} if secret else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())["message"]
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["message"]

    update = {"event": {"action": "update", "scope": "repo.content"},
              "repo": {"type": "model", "name": "org/model", "headSha": "c" * 40}}
    try:
        assert post(update, None)[0] == 401 and post(update, "wrong")[0] == 401
        assert announced == [] and store.claimed("org/model") == []
        assert post(update, "s3cret") == (202, f"org/model@{'c' * 40}: announced for 1 spec(s)")
        assert post(update, "s3cret")[1].endswith("announced for 0 spec(s)")  # the same sha again: nothing
        other = {**update, "repo": {**update["repo"], "name": "org/other"}}
        assert post(other, "s3cret") == (202, "ignored: 'org/other' is not watched")
        assert announced == [("org/model", "c" * 40)]
    finally:
        server.shutdown()
