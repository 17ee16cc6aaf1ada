"""Loading a checkpoint for calibration and evaluation: one place that picks device and dtype."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from enginewright.quant.memory_plan import MemoryPlan

logger = logging.getLogger(__name__)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: Path, dtype: str, trust_remote_code: bool = False, plan: MemoryPlan | None = None,
               offload_dir: Path | None = None) -> torch.nn.Module:
    """The checkpoint on this worker's device, or placed as `plan` says (enginewright/quant/placement.py); `offload_dir`
    holds the layers a layerwise plan offloads to disk."""
    import torch
    from transformers import AutoModelForCausalLM

    from enginewright.quant.modelopt_import import import_modelopt

    import_modelopt()  # before any model exists in this process: enginewright/quant/modelopt_import.py says why
    free_unreachable_models()
    placed: dict = {}
    if plan is not None and plan.kind != "one_device":
        import tempfile

        from enginewright.quant.placement import load_kwargs

        placed = load_kwargs(plan, path, dtype, offload_dir or Path(tempfile.mkdtemp(prefix="enginewright-offload-")))
    logger.info("loading model %s (%s%s)", path, dtype, f", {plan.kind}" if plan else "")  # benchmarks/gpu_build.py counts these
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype), use_safetensors=None, trust_remote_code=trust_remote_code, **placed
    )
    if placed:
        return model.eval()
    return model.to(pick_device()).eval()  # type: ignore[arg-type]  # transformers types `.to` for one model class


def free_unreachable_models() -> None:
    """Collect the models earlier steps of this process left behind before loading another. A ModelOpt-quantized model
    holds reference cycles, so it is freed only by a garbage collection, which GPU memory does not trigger: on an H200
    an 8B model searched by AutoQuantize (21 GiB) and one calibrated (13 GiB) stayed allocated through the next
    step's load until collected (benchmarks/auto_quantize.py, docs/results.md)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TokenizerFile:
    """A checkpoint's tokenizer.json run by the `tokenizers` library itself (the backend a transformers fast
    tokenizer wraps; its `encode_batch(…, add_special_tokens=False)` is what the fast tokenizer's `__call__`
    calls), for the preflight: transformers' AutoTokenizer costs ~4 s of imports, this a few milliseconds.
    It answers what `tasks.calibration.token_stream` asks: `eos_token_id` and `(batch, add_special_tokens=False)`.
    tests/test_calibration.py checks it gives the same token stream as AutoTokenizer."""

    def __init__(self, path: Path):
        import json

        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(path / "tokenizer.json"))
        eos = None
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if eos is None and (path / name).is_file():
                eos = json.loads((path / name).read_text()).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        self.eos_token_id = self.backend.token_to_id(eos) if isinstance(eos, str) else None

    def __call__(self, batch: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        encoded = self.backend.encode_batch(batch, add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encoded]}


def preflight_tokenizer(path: Path, trust_remote_code: bool = False):
    """The tokenizer the preflight counts calibration tokens with: tokenizer.json directly where there is one and no
    custom code, else transformers' (which the build itself always uses)."""
    if (path / "tokenizer.json").is_file() and not trust_remote_code:
        return TokenizerFile(path)
    return load_tokenizer(path, trust_remote_code)


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def causal_lm_model_types() -> set[str]:
    """The model types AutoModelForCausalLM builds: the keys of transformers'
    `models/auto/modeling_auto.py` MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, read from that file as a literal (importing
    the module costs ~4 s of imports, too slow for `build --dry-run`); the import where the file's shape changed."""
    import ast
    import importlib.metadata

    source = importlib.metadata.distribution("transformers").locate_file("transformers/models/auto/modeling_auto.py")
    try:
        tree = ast.parse(Path(str(source)).read_text())
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args
                    and any(getattr(t, "id", None) == "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES" for t in node.targets)):
                return {model_type for model_type, _ in ast.literal_eval(node.value.args[0])}
    except (OSError, SyntaxError, ValueError, TypeError):
        pass
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
