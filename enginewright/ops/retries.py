"""The retry budget of everything that talks to a server, in one place: the Prefect task retries of the registry
and store steps, the requests' own retries inside each attempt (one setting, `ENGINEWRIGHT_SERVER_RETRIES`), and
which errors are never retried.

Stacked defaults made one MLflow outage cost 12¾ minutes: MLflow's client retries each request 7 times (backoff
factor 2: waits of 0, 4, 8 … 120 s), inside each of the step's 3 attempts. The requests now retry N times.
"""

from __future__ import annotations

import os
from typing import Any

from enginewright.errors import BundleVerificationError, ExportVerificationError, InputError
from enginewright.ops import mlflow_env

# Never better on a second try: bad input, and bytes that fail verification (a tampered bundle was downloaded
# three times before it was refused).
PERMANENT = (InputError, BundleVerificationError, ExportVerificationError)


def retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry condition: bad input or bytes that fail verification never get better by retrying; a timeout or a
    flaky server might."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return False


# The registry and store steps (tasks/register.py, tasks/deploy.py): attempts and the wait between them.
STEP_RETRIES = 2
STEP_RETRY_DELAY_S = 10
# MLflow's backoff factor: urllib3's Retry waits factor × 2^(k−1) s before retry k ≥ 2, none before the first
# (urllib3/util/retry.py Retry.get_backoff_time; mlflow/utils/request_utils.py builds the session with
# MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR, mlflow 3.17.2 mlflow/environment_variables.py).
MLFLOW_BACKOFF_FACTOR = 2


def outage_wait_s(server_retries: int) -> float:
    """Seconds a registry step waits, in all, before it fails against a server that refuses every connection
    (without urllib3's jitter of up to 1 s per wait, and without request timeouts)."""
    per_attempt = MLFLOW_BACKOFF_FACTOR * (2 ** server_retries - 2) if server_retries > 1 else 0
    return (STEP_RETRIES + 1) * per_attempt + STEP_RETRIES * STEP_RETRY_DELAY_S


def apply_server_retries(server_retries: int) -> None:
    """MLflow's client takes its retries only from the environment: this process's MLflow requests retry
    `server_retries` times (boto3 clients take theirs from TransferSettings.attempts)."""
    os.environ[mlflow_env.MLFLOW_HTTP_REQUEST_MAX_RETRIES] = str(server_retries)
    os.environ[mlflow_env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR] = str(MLFLOW_BACKOFF_FACTOR)
