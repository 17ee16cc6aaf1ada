"""Prefect's temporary API server for one command, started before the command imports its flow.

Where no PREFECT_API_URL is set, Prefect starts a temporary server — a uvicorn subprocess, ~5.7 s to answer on the
project's 2-core machine — at a flow's first API call, after the process has checked its input, imported the flow's
steps and Prefect's server package (~2.6 s). `build` starts the same server, with Prefect's own command line, once
its flags and spec are valid: it boots on the other core while this process checks and imports, and the flow talks
to it through PREFECT_API_URL, so this process never imports the server package (docs/results.md: a no-change
rerun). If it cannot start, the flow falls back to Prefect's own temporary server.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# prefect 3.9.1, prefect/server/api/server.py, SubprocessASGIServer._run_uvicorn_command: the environment and the
# command line of Prefect's own temporary server
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def uvicorn_command(port: int) -> list[str]:
    """Prefect's own (see SERVER_ENV), found without importing prefect (~1 s, spent while the server boots)."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None, "prefect is not installed"
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
            "error", "--lifespan", "on"]


class TemporaryServer:
    def __init__(self, process: subprocess.Popen | None, port: int | None) -> None:
        self.process = process
        self.port = port
        self.used = False  # a flow ran against it: its logs and events must reach it before it stops

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def ready(self, timeout_s: float) -> str | None:
        """The API URL once the server answers /health; None where it did not start (Prefect then starts its own)."""
        if self.process is None:
            return None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.api_url
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        return None

    def close(self) -> None:
        """At the command's end: the runs' queued logs and events sent (Prefect's workers drained, as its own exit
        hook would, but while the server still answers), then the server stopped."""
        if self.process is None:
            return
        if not self.used:  # refused before any flow: nothing queued for it
            self.stop()
            return
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_temporary_server() -> TemporaryServer:
    """Started now where the command would get Prefect's temporary server — decided from the environment alone, so
    that the server's boot does not wait for prefect's import; `on_temporary_server` stops it where Prefect's
    settings (e.g. a profile) name a server after all. Its output is discarded (one that fails is replaced by
    Prefect's own, which reports why). `close()` at the command's end; the process's exit stops it otherwise."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "").lower() in (
            "0", "false"):
        return TemporaryServer(None, None)
    port = free_port()
    process = subprocess.Popen(uvicorn_command(port), env={**os.environ, **SERVER_ENV}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    server = TemporaryServer(process, port)
    atexit.register(server.stop)
    return server


@contextmanager
def on_temporary_server(server: TemporaryServer) -> Iterator[None]:
    """Prefect's client pointed at `server` once it answers (unchanged where it did not start)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        server.stop()  # Prefect's settings name a server (a profile), or allow no temporary one
    api = server.ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    if api is None:
        yield
        return
    server.used = True
    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield


# Set by a parent (the matrix) in the environment of the builds it starts when its Prefect server is a temporary one:
# their runs are on it, and it stops with the parent, so a link to them would point at nothing.
PARENT_SERVER_IS_TEMPORARY = "ENGINEWRIGHT_PARENT_PREFECT_SERVER_IS_TEMPORARY"


def runs_on_temporary_server() -> bool:
    """Whether this process's flow runs live on a Prefect server that stops with the command (its own, Prefect's
    ephemeral one, or its parent's temporary one)."""
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value() or os.environ.get(PARENT_SERVER_IS_TEMPORARY) == "1"


def flow_run_link(flow_run_id: object) -> str:
    """Where a person finds a flow run and its `accuracy-gate` artifact; what happened to them without a server."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if runs_on_temporary_server():
        return ("Prefect's temporary server, stopped when the command ended (this build's, or its matrix's): the "
                "accuracy-gate artifact went with it (the "
                "MLflow run keeps the same report under gate/). To keep runs and artifacts, build against a Prefect "
                "server: `enginewright stack up`, then load its env (README)")
    return f"{api.rstrip('/').removesuffix('/api')}/runs/flow-run/{flow_run_id} (artifact accuracy-gate)"
