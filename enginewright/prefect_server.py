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
    import prefect

    return [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
            "error", "--lifespan", "on"]


class TemporaryServer:
    def __init__(self, process: subprocess.Popen | None, port: int | None) -> None:
        self.process = process
        self.port = port

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
    """Started now where the command would get Prefect's temporary server (no PREFECT_API_URL, temporary servers
    allowed), its output discarded (one that fails is replaced by Prefect's own, which reports why); stopped when
    the process exits. `on_temporary_server` runs the flow against it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, get_current_settings

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return TemporaryServer(None, None)
    port = free_port()
    env = {**os.environ, **SERVER_ENV, **get_current_settings().to_environment_variables(exclude_unset=True)}
    process = subprocess.Popen(uvicorn_command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TemporaryServer(process, port)
    # Stopped at exit, as Prefect stops its own: Prefect's log and event workers, registered later, drain first.
    atexit.register(server.stop)
    return server


@contextmanager
def on_temporary_server(server: TemporaryServer) -> Iterator[None]:
    """Prefect's client pointed at `server` once it answers (unchanged where it did not start)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    api = server.ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    if api is None:
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield
