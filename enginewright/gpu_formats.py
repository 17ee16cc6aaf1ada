"""Which quantization formats need which NVIDIA GPU generation (compute capability), to calibrate and to serve.
No torch import here: the deploy side reads these tables without loading a framework."""

# Formats that can only be calibrated on a GPU of at least this compute capability (ModelOpt's CUDA kernels).
GPU_ONLY_FORMATS: dict[str, tuple[int, int]] = {"nvfp4": (10, 0), "nvfp4_awq": (10, 0), "mxfp8": (10, 0),
                                                 "mxfp4": (10, 0)}
# What each format needs to be served natively by TensorRT-LLM (used by the deploy check).
SERVING_MIN_CAPABILITY: dict[str, tuple[int, int]] = {
    "fp8": (8, 9), "fp8_pcpt": (8, 9), "w4a8_awq": (8, 9), **GPU_ONLY_FORMATS,
}
