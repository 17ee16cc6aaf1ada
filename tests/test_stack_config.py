"""What `enginewright stack up` would start, with and without MLflow's basic auth (no process is started here;
tests/e2e runs the session stack with auth on)."""

from __future__ import annotations

from pathlib import Path

from enginewright.config.settings import Settings
from enginewright.stack.servers import Stack


def mlflow_component(stack: Stack):
    return next(c for c in stack.components() if c.name == "mlflow")


def test_mlflow_runs_without_logins_by_default(tmp_path: Path) -> None:
    stack = Stack(Settings(home=tmp_path))
    mlflow = mlflow_component(stack)
    assert "--app-name" not in mlflow.command and "MLFLOW_AUTH_CONFIG_PATH" not in mlflow.env
    assert "MLFLOW_TRACKING_PASSWORD" not in stack.client_env()
    assert "mlflow_auth" not in stack.databases


def test_with_auth_mlflow_runs_the_basic_auth_app_and_clients_log_in_as_its_admin(tmp_path: Path) -> None:
    stack = Stack(Settings(home=tmp_path, stack_mlflow_auth=True, stack_name="team"))
    mlflow = mlflow_component(stack)
    assert mlflow.command[-2:] == ["--app-name", "basic-auth"]
    password = stack.secrets["mlflow_admin_password"]
    assert len(password) >= 24 and mlflow.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    assert mlflow.env["MLFLOW_AUTH_CONFIG_PATH"] == str(stack.dir / "mlflow-auth.ini")
    env = stack.client_env()
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("admin", password)
    assert stack.databases["mlflow_auth"] == "team_mlflow_auth"
    assert Stack(Settings(home=tmp_path, stack_mlflow_auth=True)).secrets == stack.secrets  # kept across starts
