# GPU worker for the `gpu` pool: NVIDIA's TensorRT-LLM release image (TensorRT-LLM cannot be installed from
# PyPI) plus enginewright and a Prefect worker. Not built on the dev machines (no Docker engine there).
#   docker build -f docker/gpu-worker.Dockerfile -t enginewright/gpu-worker:0.1.0 .
# TensorRT-LLM 1.2 is the last line with the legacy TensorRT-engine lane; pass a newer release image with
# --build-arg TRTLLM_IMAGE=... to serve checkpoints only.
ARG TRTLLM_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.0
FROM ${TRTLLM_IMAGE}
WORKDIR /opt/enginewright
COPY pyproject.toml README.md ./
COPY enginewright ./enginewright
COPY flows ./flows
COPY tasks ./tasks
# The image's own torch (CUDA) and tensorrt_llm stay: install our package without letting pip replace them.
RUN pip install --no-cache-dir --no-deps -e . \
 && pip install --no-cache-dir "nvidia-modelopt==0.47.0" "lm-eval[hf]==0.4.13" "mlflow==3.17.2" "prefect==3.9.1" \
      boto3 "pydantic>=2.7" "pydantic-settings>=2.2" pyyaml gguf
# ModelOpt JIT-builds its CUDA extensions on first use: 52.6 s (modelopt_cuda_ext) and 63.8 s
# (modelopt_cuda_ext_fp8) on an H200 (docs/results.md). Build them into the image instead, for every SM the
# pool serves (no GPU is visible during `docker build`, so the architectures are named).
ENV TORCH_EXTENSIONS_DIR=/opt/torch_extensions TORCH_CUDA_ARCH_LIST="8.0;8.9;9.0;10.0+PTX"
RUN python -c "import modelopt.torch.quantization.extensions as ext; ext.precompile()"
ENV PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
    ENGINEWRIGHT_CHECKOUT=/opt/enginewright
CMD ["prefect", "worker", "start", "--pool", "gpu"]
