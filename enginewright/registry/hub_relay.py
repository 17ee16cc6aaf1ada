"""A relay for Hugging Face Hub webhooks: the push alternative to polling.

The Hub POSTs a JSON payload to the relay for every change of a repository it is subscribed to, with the
webhook's secret in the `X-Webhook-Secret` header. The relay refuses any request whose secret differs
(compared in constant time; the secret comes from `ENGINEWRIGHT_HUB_WEBHOOK_SECRET` and is never logged), and
for a content update of a watched model repo claims and announces the new `headSha` exactly as a watcher tick
would, so a revision seen by both is still built once. Prefect's own webhooks are a Cloud feature; this is
the small relay that OSS needs in front of `emit_event`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer

from enginewright.registry.watchlist import WatchStore
from enginewright.registry.webhook_server import make_json_server, parse_json


def handle_hub_event(payload: dict, store: WatchStore, announce: Callable[[str, str, str], None]) -> tuple[int, str]:
    """(HTTP status, message) for one verified webhook payload."""
    repo, event = payload.get("repo") or {}, payload.get("event") or {}
    if repo.get("type") != "model" or event.get("scope") != "repo.content" or not repo.get("headSha"):
        return 202, "ignored: not a content update of a model repo"
    watched = [w for w in store.list() if w.source == repo.get("name")]
    if not watched:
        return 202, f"ignored: {repo.get('name')!r} is not watched"
    announced = sum(store.announce_once(entry, repo["headSha"], announce) for entry in watched)
    return 202, f"{repo['name']}@{repo['headSha']}: announced for {announced} spec(s)"


def make_server(host: str, port: int, secret: str, store: WatchStore,
                announce: Callable[[str, str, str], None]) -> ThreadingHTTPServer:
    if not secret:
        raise ValueError("the Hub webhook relay needs a secret (ENGINEWRIGHT_HUB_WEBHOOK_SECRET)")

    def handle(headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        if not hmac.compare_digest(headers.get("X-Webhook-Secret", "").encode(), secret.encode()):
            return 401, "bad or missing X-Webhook-Secret"
        payload = parse_json(body)
        if payload is None:
            return 400, "body is not a JSON object"
        return handle_hub_event(payload, store, announce)

    return make_json_server(host, port, handle)
