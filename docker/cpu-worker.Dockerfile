# CPU worker for the `cpu` pool (watchers, deploys, small CPU builds): slim Python with the CPU torch wheel,
# installed before the rest so nothing pulls a CUDA build.
#   docker build -f docker/cpu-worker.Dockerfile -t enginewright/cpu-worker:0.1.0 .
FROM python:3.11-slim
WORKDIR /opt/enginewright
COPY pyproject.toml README.md ./
COPY enginewright ./enginewright
COPY flows ./flows
COPY tasks ./tasks
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install --no-cache-dir -e ".[stack]"  # [stack]: psycopg2 for the MLflow server of infra/compose.yaml
ENV PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
    ENGINEWRIGHT_CHECKOUT=/opt/enginewright
CMD ["prefect", "worker", "start", "--pool", "cpu"]
