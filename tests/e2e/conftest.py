"""The production stack, started once for the end-to-end tests that need all of it (registry, promotion).

It runs MLflow with basic authentication (`stack_mlflow_auth`), as a team's shared registry would: every test on
the stack logs in, through the client env in subprocesses and MLflow's login variables in this process."""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

from enginewright.config.settings import Settings
from enginewright.stack.servers import Stack, port_in_use


def wait_for(condition, timeout_s: float, what: str):
    """Poll `condition` until it returns something truthy (returned) or `timeout_s` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def free_port_block(width: int) -> int:
    while True:
        base = random.randrange(20000, 30000, 20)
        if not any(port_in_use(base + i) for i in range(width)):
            return base


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    s3_port = free_port_block(13)
    settings = Settings(home=tmp_path_factory.mktemp("stack-home"), stack_s3_port=s3_port,
                        stack_mlflow_port=s3_port + 10, stack_prefect_port=s3_port + 11, stack_relay_port=s3_port + 12,
                        stack_name=f"ewtest_{uuid.uuid4().hex[:8]}", stack_bucket="ewtest", stack_mlflow_auth=True)
    stack = Stack(settings)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        stack.up(say=lambda line: None)
        os.environ.update({k: stack.client_env()[k] for k in saved})
        yield stack
    finally:
        stack.down(purge=True, say=lambda line: None)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


