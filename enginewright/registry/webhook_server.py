"""The small HTTP server both relays run (Hub → watcher, MLflow → deploy): POST a JSON body, get a JSON answer.

`handle(headers, body)` checks the request's signature or secret itself (it knows its sender's scheme) and
returns (HTTP status, message). Request lines and headers are never logged: they carry secrets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
Handle = Callable[[Mapping[str, str], bytes], tuple[int, str]]


def make_json_server(host: str, port: int, handle: Handle) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply(413, "payload too large")
            try:
                status, message = handle(self.headers, self.rfile.read(length))
            except Exception as exc:  # the sender retries on 5xx; the message names the failure, never a secret
                status, message = 500, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._reply(status, message)

        def _reply(self, status: int, message: str) -> None:
            send_body(self, status, json.dumps({"message": message}).encode(), "application/json")

        def log_message(self, fmt, *args):
            pass

    return ThreadingHTTPServer((host, port), Handler)


def send_body(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    """One whole response: status, Content-Type, Content-Length, the body."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def parse_json(body: bytes) -> dict | None:
    try:
        payload = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
