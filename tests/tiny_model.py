"""A tiny randomly initialised Llama with SmolLM2's real tokenizer, for fast tests of every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from enginewright.quant.gguf_import import smollm2_gguf_path


def save_smollm2_tokenizer(out_dir: Path) -> None:
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out_dir)


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def work_dir_with(int8_sq_state, root: Path, key: str):
    """A fresh work directory under `root` holding a copy of the session's quantized state and export:
    (the copy's state, the work dir). Each module evaluates in its own, so none sees another's records."""
    import dataclasses
    import shutil

    from enginewright.keys.work_dir import WorkDir

    state, checkpoint = int8_sq_state
    work = WorkDir.open(root / "builds", key)
    shutil.copy2(state.path, work.quantized_state)
    shutil.copytree(checkpoint, work.checkpoint, dirs_exist_ok=True)
    return dataclasses.replace(state, path=work.quantized_state), work


def assert_loglikelihoods_match_hflm(lm: Any, model_dir: Path) -> None:
    """A runtime's lm-eval model scores what HFLM scores on the float32 model, within 1e-4, with the same greedy flags
    (contexts with and without text, one long enough to matter)."""
    import pytest
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from enginewright.quant.models import load_model, load_tokenizer

    pairs = [("Question: what is red?\nAnswer:", " an apple"), ("The sky is", " blue"), ("", "Hello there"),
             ("A long context " * 5, " ends here")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    ours = lm.loglikelihood(requests, disable_tqdm=True)
    hf = HFLM(pretrained=load_model(model_dir, "float32"), tokenizer=load_tokenizer(model_dir), batch_size=4,
              softmax_dtype="float32").loglikelihood(requests, disable_tqdm=True)
    for (a, greedy_a), (b, greedy_b) in zip(ours, hf, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
