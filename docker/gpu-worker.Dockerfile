# GPU worker for the `gpu` pool: NVIDIA's TensorRT-LLM release image (TensorRT-LLM cannot be installed from
# PyPI) plus enginewright and a Prefect worker. Not built on the dev machines (no Docker engine there).
#   docker build -f docker/gpu-worker.Dockerfile -t enginewright/gpu-worker:0.1.0 .
# Pinned on 1.3.0rc20: the first line whose prompt log-probabilities hold every prompt token (>= 1.3.0rc11: the
# runtime evaluation, tasks/runtimes/tensorrt_llm.py), with `trtllm-bench prepare-dataset`, NVFP4 on Hopper, and
# the last with the TensorRT-engine lane (enginewright.serving.runtimes.tensorrt_llm). Its version enters every build key
# (enginewright.keys.environment.KEY_TOOLS). Unverified: no machine here can pull or run the image.
ARG TRTLLM_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.3.0rc20
FROM ${TRTLLM_IMAGE}
WORKDIR /opt/enginewright
COPY pyproject.toml README.md ./
COPY enginewright ./enginewright
COPY flows ./flows
COPY tasks ./tasks
# Our dependencies come from pyproject.toml itself (docker/image_requirements.py), never re-listed here; the
# image's own torch, tensorrt and tensorrt-llm are frozen as constraints, so pip can neither replace them nor
# silently pick versions they conflict with (a conflict fails this build).
COPY docker/image_requirements.py ./docker/
RUN python docker/image_requirements.py > /tmp/requirements.txt \
 && pip freeze | grep -iE '^(torch|tensorrt|tensorrt[-_]llm|nvidia-modelopt)==' > /tmp/image-constraints.txt \
 && pip install --no-cache-dir -c /tmp/image-constraints.txt -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps -e .
# ModelOpt JIT-builds its CUDA extensions on first use: 52.6 s (modelopt_cuda_ext) and 63.8 s
# (modelopt_cuda_ext_fp8) on an H200 (docs/results.md). Build them into the image instead, for every SM the
# pool serves (no GPU is visible during `docker build`, so the architectures are named).
ENV TORCH_EXTENSIONS_DIR=/opt/torch_extensions TORCH_CUDA_ARCH_LIST="8.0;8.9;9.0;10.0+PTX"
RUN python -c "import modelopt.torch.quantization.extensions as ext; ext.precompile()"
ENV PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
    ENGINEWRIGHT_CHECKOUT=/opt/enginewright
CMD ["prefect", "worker", "start", "--pool", "gpu"]
