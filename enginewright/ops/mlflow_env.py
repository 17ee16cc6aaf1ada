"""The names of MLflow's environment variables a process sets before MLflow is imported.

Each equals the `.name` of MLflow's own constant in `mlflow.environment_variables` (mlflow 3.17.2;
tests/test_retries.py checks every one against the installed MLflow, so a renamed knob fails CI). They are not
imported from there at run time because that import loads all of MLflow (~1.3 s on every command, dry runs
included); code that has MLflow loaded anyway (the stack's servers) uses MLflow's constants directly.
"""

MLFLOW_DISABLE_TELEMETRY = "MLFLOW_DISABLE_TELEMETRY"
MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
MLFLOW_HTTP_REQUEST_MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
MLFLOW_S3_ENDPOINT_URL = "MLFLOW_S3_ENDPOINT_URL"
