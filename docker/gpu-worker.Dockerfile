# GPU worker: NVIDIA's TensorRT-LLM release image (TensorRT-LLM cannot be installed from PyPI) plus
# enginewright and a Prefect worker for the `gpu` pool. Not built on the dev machines (no Docker engine).
ARG TRTLLM_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.0
FROM ${TRTLLM_IMAGE}
WORKDIR /opt/enginewright
COPY pyproject.toml README.md ./
COPY enginewright ./enginewright
COPY flows ./flows
COPY tasks ./tasks
# The image's own torch (CUDA) stays: install our package without letting pip replace it.
RUN pip install --no-cache-dir --no-deps -e . \
 && pip install --no-cache-dir "nvidia-modelopt==0.47.0" "lm-eval[hf]==0.4.13" "mlflow==3.17.2" "prefect==3.9.1" \
      boto3 "pydantic>=2.7" "pydantic-settings>=2.2" pyyaml gguf
ENV PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
CMD ["prefect", "worker", "start", "--pool", "gpu"]
