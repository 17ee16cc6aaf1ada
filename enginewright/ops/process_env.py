"""What every enginewright process sets in its environment before any library reads it: the CLI and each flow
that a worker starts (it never passes through the CLI) call `prepare_process` first."""

from __future__ import annotations

import os

from enginewright.config.settings import Settings
from enginewright.ops import mlflow_env
from enginewright.ops.retries import apply_server_retries


def prepare_process(settings: Settings) -> None:
    """No telemetry, Prefect's ephemeral server given time to start, MLflow's requests retried by the one retry
    setting, and MLflow's own S3 access pointed at the bundle store's endpoint; the user's own values win except
    for the retries (one setting, not two)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault(mlflow_env.MLFLOW_DISABLE_TELEMETRY, "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # One bar per file ("Downloading artifacts", ten for a ten-file bundle) is MLflow's; ours label whole steps.
    os.environ.setdefault(mlflow_env.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR, "false")
    apply_server_retries(settings.server_retries)
    visible = visible_devices(settings.device)
    if visible is not None:  # before torch initializes CUDA: later it has no effect
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if settings.s3_endpoint_url:  # MLflow's own S3 access (run artifacts) uses the same store as the bundles
        os.environ.setdefault(mlflow_env.MLFLOW_S3_ENDPOINT_URL, settings.s3_endpoint_url)


def visible_devices(device: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for Settings.device: "" for cpu, "0,2" for cuda:0,2; None leaves it as it is."""
    if device is None or device == "cuda":
        return None
    return "" if device == "cpu" else device.removeprefix("cuda:")
