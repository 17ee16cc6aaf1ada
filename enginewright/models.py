"""Loading a checkpoint for calibration and evaluation: one place that picks device and dtype."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: Path, dtype: str, trust_remote_code: bool = False) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    logger.info("loading model %s (%s)", path, dtype)  # benchmarks/gpu_build.py counts these
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype), use_safetensors=None, trust_remote_code=trust_remote_code
    )
    return model.to(pick_device()).eval()  # type: ignore[arg-type]  # transformers types `.to` for one model class


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
