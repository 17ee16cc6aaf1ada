"""Secrets and authentication against real servers.

- A full build in production mode (the stack: S3, MLflow and Prefect servers on PostgreSQL) with known secret
  values in its environment: AWS keys, a Hugging Face token, MLflow credentials, both webhook secrets. Then
  everything that was written is searched for them: the build's own output, every file under its home, every
  object in the bucket, dumps of the MLflow, Prefect and watch databases (parameters, tags, logs, events),
  the servers' logs.
- MLflow with basic authentication: the session stack runs `mlflow server --app-name basic-auth`
  (`stack_mlflow_auth`). Without a login it refuses; a user the admin created registers and deploys with
  credentials from MLflow's own variables (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), and with a
  wrong password the CLI says so in one line, without the password.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from enginewright.stack.servers import Stack, database_url

pytestmark = pytest.mark.e2e


def known_secrets(stack: Stack) -> dict[str, str]:
    """Secret values in a build's environment; the MLflow login is a user created for this build."""
    return {
        "AWS_ACCESS_KEY_ID": stack.secrets["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": stack.secrets["s3_secret_key"],
        "HF_TOKEN": "hf_" + secrets.token_hex(16),
        "MLFLOW_TRACKING_PASSWORD": "pw-" + secrets.token_hex(12),
        "ENGINEWRIGHT_HUB_WEBHOOK_SECRET": "hub-" + secrets.token_hex(12),
        "ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET": stack.secrets["mlflow_webhook_secret"],
    }


def create_mlflow_user(stack: Stack, password: str) -> str:
    """A user on the stack's MLflow, created by its admin (the login in this process's environment)."""
    from mlflow.server.auth.client import AuthServiceClient

    username = "user-" + secrets.token_hex(6)
    AuthServiceClient(stack.mlflow_url).create_user(username, password)
    return username


def found_in(data: bytes, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value.encode() in data]


def test_no_secret_in_anything_a_production_build_writes(stack: Stack, tmp_path: Path, tiny_model: Path,
                                                         shared_data: Path) -> None:
    values = known_secrets(stack)
    login = {"MLFLOW_TRACKING_USERNAME": create_mlflow_user(stack, values["MLFLOW_TRACKING_PASSWORD"])}
    home = tmp_path / "home"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"source: {{model: {tiny_model}}}\n"
                    f"calibration: {{source: {shared_data / 'calib' / 'tiny_shakespeare.txt'}, num_samples: 4, "
                    "seq_len: 32}\nevaluation: {tasks: [arc_easy], limit: 2}\n"
                    "gate: {max_drop_points: 100, smoke: false}\nregistry: {model_name: secret-scan}\n")
    env = {**os.environ, **stack.client_env(), **values, **login, "ENGINEWRIGHT_HOME": str(home),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run([sys.executable, "-m", "enginewright.cli.main", "build", "--spec", str(spec)], env=env,
                          capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "secret-scan v1" in done.stdout.decode()

    leaks: dict[str, list[str]] = {}
    values["stack's MLflow admin password"] = stack.secrets["mlflow_admin_password"]  # the relay and servers hold it

    def check(where: str, data: bytes) -> None:
        if hits := found_in(data, values):
            leaks[where] = hits

    check("build stdout", done.stdout)
    check("build stderr", done.stderr)
    scanned = 0
    for path in [*home.rglob("*"), *(stack.dir / "logs").rglob("*")]:
        if path.is_file():
            check(str(path), path.read_bytes())
            scanned += 1
    client = boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    objects = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=stack.settings.stack_bucket)
               for o in page.get("Contents", [])]
    for key in objects:
        check(f"s3://{stack.settings.stack_bucket}/{key}",
              client.get_object(Bucket=stack.settings.stack_bucket, Key=key)["Body"].read())
    for name in stack.databases.values():
        dump = subprocess.run(["pg_dump", database_url(stack.settings.stack_postgres_url, name)],
                              capture_output=True, timeout=120)
        assert dump.returncode == 0, dump.stderr
        check(f"database {name}", dump.stdout)
    assert any(key.endswith("manifest.json") for key in objects) and scanned > 20
    assert leaks == {}, leaks


def test_mlflow_basic_auth_with_credentials_from_mlflows_variables(stack: Stack, tmp_path: Path, monkeypatch) -> None:
    from enginewright.config.settings import Settings
    from flows.deploy import deploy_version
    from tests.registered_bundle import register_bundle

    assert stack.settings.stack_mlflow_auth
    try:
        urllib.request.urlopen(f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        raise AssertionError("the stack's MLflow answered a request without a login")
    except urllib.error.HTTPError as refused:
        assert refused.code == 401

    builder_password = "Builder-" + secrets.token_hex(12)
    builder = create_mlflow_user(stack, builder_password)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", builder)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", builder_password)
    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENGINEWRIGHT_MLFLOW_TRACKING_URI", stack.mlflow_url)
    monkeypatch.setenv("ENGINEWRIGHT_BUNDLE_STORE", f"s3://{stack.settings.stack_bucket}/guarded")
    monkeypatch.setenv("ENGINEWRIGHT_S3_ENDPOINT_URL", stack.s3_url)
    settings = Settings()
    version = register_bundle(settings, tmp_path / "b", "guarded", fmt="fp8")
    outcome = deploy_version("guarded", version.version, target_path=None)
    assert outcome.status == "deployed"

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    done = subprocess.run([sys.executable, "-m", "enginewright.cli.main", "deploy", "guarded", "--version", "1"],
                          env={**os.environ, "PREFECT_API_URL": stack.prefect_url}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("enginewright: error: guarded version 1: ")
    assert "wrong" not in done.stderr and builder_password not in done.stderr + done.stdout
