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
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from enginewright.watchlist import WatchStore

MAX_BODY = 1 << 20


def handle_hub_event(payload: dict, store: WatchStore, announce: Callable[[str, str, str], None]) -> tuple[int, str]:
    """(HTTP status, message) for one verified webhook payload."""
    repo, event = payload.get("repo") or {}, payload.get("event") or {}
    if repo.get("type") != "model" or event.get("scope") != "repo.content" or not repo.get("headSha"):
        return 202, "ignored: not a content update of a model repo"
    watched = [w for w in store.list() if w.source == repo.get("name")]
    if not watched:
        return 202, f"ignored: {repo.get('name')!r} is not watched"
    announced = sum(store.announce_once(entry.source, entry.spec_path, repo["headSha"], announce) for entry in watched)
    return 202, f"{repo['name']}@{repo['headSha']}: announced for {announced} spec(s)"


def make_server(host: str, port: int, secret: str, store: WatchStore,
                announce: Callable[[str, str, str], None]) -> ThreadingHTTPServer:
    if not secret:
        raise ValueError("the Hub webhook relay needs a secret (ENGINEWRIGHT_HUB_WEBHOOK_SECRET)")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            given = self.headers.get("X-Webhook-Secret", "")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                return self._reply(401, "bad or missing X-Webhook-Secret")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply(413, "payload too large")
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._reply(400, "body is not JSON")
            self._reply(*handle_hub_event(payload, store, announce))

        def _reply(self, status: int, message: str) -> None:
            body = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # the default logs request lines only; never headers (the secret)
            pass

    return ThreadingHTTPServer((host, port), Handler)
