# GPU worker for the `gpu-vllm` pool: vLLM's own release image of the version the project runs (0.26.0: torch 2.11,
# CUDA 13, the whole set FlashInfer included) plus enginewright and a Prefect worker in a venv of their own, so that
# neither sees the other's packages (vLLM 0.26.0: fastapi<0.137; Prefect 3.9: fastapi>=0.139). The build reaches vLLM
# through ENGINEWRIGHT_VLLM_PYTHON (tasks/runtimes/vllm.py); a release on this image is served by `vllm serve` from
# the image's own python. Not built on the dev machines (no Docker engine there); the offline equivalent without Docker
# is scripts/gpu_worker/ (what ran on the project's H100 machine).
#   docker build -f docker/vllm-worker.Dockerfile -t enginewright/vllm-worker:0.1.0 .
ARG VLLM_IMAGE=vllm/vllm-openai:v0.26.0
FROM ${VLLM_IMAGE}
WORKDIR /opt/enginewright
COPY pyproject.toml README.md ./
COPY enginewright ./enginewright
COPY flows ./flows
COPY tasks ./tasks
COPY docker/image_requirements.py ./docker/
# The build's stack from pyproject.toml (docker/image_requirements.py) in a venv that does NOT see the image's
# packages: ModelOpt imports vLLM whenever it is importable, and vLLM's fastapi pin would break Prefect. torch is the
# image's own version, CUDA 13 build, from PyTorch's index, frozen as a constraint.
RUN python3 -m venv /opt/enginewright-venv \
 && python3 -c "import torch; print(f'torch=={torch.__version__.split(\"+\")[0]}')" > /tmp/image-constraints.txt \
 && /opt/enginewright-venv/bin/pip install --no-cache-dir -c /tmp/image-constraints.txt torch \
      --index-url https://download.pytorch.org/whl/cu130 --extra-index-url https://pypi.org/simple \
 && python3 docker/image_requirements.py > /tmp/requirements.txt \
 && /opt/enginewright-venv/bin/pip install --no-cache-dir -c /tmp/image-constraints.txt -r /tmp/requirements.txt \
 && /opt/enginewright-venv/bin/pip install --no-cache-dir --no-deps -e .
ENV PATH=/opt/enginewright-venv/bin:$PATH \
    ENGINEWRIGHT_VLLM_PYTHON=/usr/bin/python3 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 \
    ENGINEWRIGHT_CHECKOUT=/opt/enginewright
ENTRYPOINT []
CMD ["prefect", "worker", "start", "--pool", "gpu-vllm"]
