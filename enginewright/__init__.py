"""enginewright: Hugging Face checkpoint → ModelOpt quantization → lm-eval check → MLflow-registered bundle."""

__version__ = "0.1.0"
