"""The temporary Prefect server `build` starts before it imports its flow (enginewright/ops/prefect_server.py)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from prefect.settings import PREFECT_API_URL, temporary_settings

from enginewright.ops.prefect_server import (
    TemporaryServer,
    free_port,
    on_temporary_server,
    start_temporary_server,
)


def test_it_serves_prefects_api_with_prefects_own_command_and_stops() -> None:
    server = start_temporary_server()
    try:
        api = server.ready(120)
        assert api == f"http://127.0.0.1:{server.port}/api"
        with urllib.request.urlopen(f"{api}/health", timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{api}/admin/version", timeout=5) as answer:  # Prefect's own server app
            assert answer.status == 200
    finally:
        process = server.process
        server.close()  # no flow used it: stopped without draining Prefect's workers
    assert process is not None and process.poll() is not None


def test_against_a_configured_server_nothing_is_started(monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    server = start_temporary_server()
    assert server.process is None and server.ready(1) is None


def test_a_server_named_by_prefects_settings_alone_stops_the_early_one() -> None:
    """A profile's PREFECT_API_URL is not in the environment: the early server starts, and is stopped unused."""
    server = start_temporary_server()
    process = server.process
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        with on_temporary_server(server):
            assert PREFECT_API_URL.value() == "http://127.0.0.1:1/api"
    assert server.process is None and process is not None and process.poll() is not None


def test_a_server_that_dies_leaves_the_flow_to_prefects_own() -> None:
    dead = TemporaryServer(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]), free_port())
    assert dead.ready(30) is None and dead.process is None


def test_a_matrix_variant_on_the_matrixs_temporary_server_prints_no_link_into_it(monkeypatch) -> None:
    """The matrix's variants ran against its temporary server and printed links into it that were dead by the time
    anyone read them (a new user's report)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from enginewright.ops.prefect_server import PARENT_SERVER_IS_TEMPORARY, flow_run_link
    from tasks.variants import worker_env

    monkeypatch.delenv(PARENT_SERVER_IS_TEMPORARY, raising=False)
    env = worker_env(0, 2, "http://127.0.0.1:4242/api", temporary_server=True)
    assert env[PARENT_SERVER_IS_TEMPORARY] == "1" and env["PREFECT_API_URL"] == "http://127.0.0.1:4242/api"
    assert PARENT_SERVER_IS_TEMPORARY not in worker_env(0, 2, "http://127.0.0.1:4242/api")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4242/api"}):
        assert flow_run_link("r1") == "http://127.0.0.1:4242/runs/flow-run/r1 (artifact accuracy-gate)"
        monkeypatch.setenv(PARENT_SERVER_IS_TEMPORARY, "1")  # as the variant's process sees it
        assert flow_run_link("r1").startswith("Prefect's temporary server, stopped when the command ended")
