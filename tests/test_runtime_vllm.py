"""The `vllm` runtime (tasks/runtimes/vllm.py): our lm-eval class in the build's process, the scorer in vLLM's own
(tasks/runtimes/vllm_scorer.py), here driven through the `vllm` stand-in (tests/standins/vllm: vLLM 0.26.0's
LLM/SamplingParams/prompt-logprobs shapes, numbers from PyTorch). vLLM's own numbers on the bundle were measured on the
H100 by benchmarks/vllm_fidelity.py (docs/results.md)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from enginewright.errors import RuntimeLaneFailed
from tests.tiny_model import assert_loglikelihoods_match_hflm

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture
def vllm_standin(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PYTHONPATH", str(STANDINS))
    return sys.executable


@pytest.mark.parametrize("algo, expected", [("FP8", "modelopt"), ("FP8_PER_CHANNEL_PER_TOKEN", "modelopt"),
                                            ("NVFP4", "modelopt_fp4"), ("MIXED_PRECISION", "modelopt_mixed")])
def test_the_checkpoints_format_picks_vllms_loader(tmp_path: Path, algo: str, expected: str) -> None:
    from enginewright.serving.runtimes.vllm import quantization_of

    assert quantization_of(tmp_path) is None  # a plain checkpoint
    (tmp_path / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": algo}}))
    assert quantization_of(tmp_path) == expected


def test_a_format_vllm_does_not_load_falls_back_with_the_reason(tmp_path: Path) -> None:
    from enginewright.serving.runtimes.vllm import quantization_of

    (tmp_path / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "INT8_SQ"}}))
    with pytest.raises(RuntimeLaneFailed, match="does not load INT8_SQ"):
        quantization_of(tmp_path)


def test_without_a_vllm_environment_the_runtime_says_how_to_get_one(tiny_model: Path, monkeypatch) -> None:
    from enginewright.quant.models import load_tokenizer
    from tasks.runtimes.vllm import VllmLM

    monkeypatch.delenv("ENGINEWRIGHT_VLLM_PYTHON", raising=False)
    with pytest.raises(RuntimeLaneFailed, match="set ENGINEWRIGHT_VLLM_PYTHON"):
        VllmLM(str(tiny_model), load_tokenizer(tiny_model))


def test_vllm_lm_matches_hflm_loglikelihoods_and_generates_through_the_scorer(vllm_standin, tiny_model) -> None:
    from lm_eval.api.instance import Instance

    from enginewright.quant.models import load_tokenizer
    from tasks.runtimes.vllm import VllmLM

    lm = VllmLM(str(tiny_model), load_tokenizer(tiny_model), python=vllm_standin)
    try:
        assert lm.version == "0.26.0"
        assert_loglikelihoods_match_hflm(lm, tiny_model)
        generated = lm.generate_until([Instance("generate_until", {}, ("The sky is", {"until": ["\n"],
                                                                                      "max_gen_toks": 5}), 0)])
        assert len(generated) == 1 and "\n" not in generated[0]
        with pytest.raises(RuntimeLaneFailed, match="vLLM: ValueError: unknown request"):
            lm._ask({"perplexity": []})
    finally:
        lm.shutdown()


def fake_vllm_environment(root: Path, version: str | None) -> str:
    """sys.executable with a vLLM distribution's metadata on its path (what `choose` reads), or without any."""
    site = root / "site"
    site.mkdir(parents=True)
    if version:
        (site / f"vllm-{version}.dist-info").mkdir()
        (site / f"vllm-{version}.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return str(site)


@pytest.mark.parametrize("algo, version, runtime, says", [
    ("FP8", "0.26.0", "vllm", "vLLM 0.26.0 (.*) loads the bundle's checkpoint as modelopt"),
    ("INT8_SQ", "0.26.0", "simulated", "no CUDA GPU on this worker; vLLM not used: .*does not load INT8_SQ"),
    ("FP8", None, "simulated", "vLLM not used: .* has no vLLM"),
])
def test_vllm_is_chosen_where_its_environment_loads_the_format(tmp_path: Path, monkeypatch, algo: str,
                                                                version: str | None, runtime: str, says: str) -> None:
    from tasks import runtimes

    monkeypatch.setenv("PYTHONPATH", fake_vllm_environment(tmp_path, version))
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": algo}}))
    skipped = {"status": "skipped", "reason": "no CUDA GPU on this worker"}
    choice = runtimes.choose(skipped, sys.executable, checkpoint)
    assert choice.runtime == runtime and re.search(says, choice.reason), choice
    assert choice.version == version if runtime == "vllm" else True
    assert runtimes.choose(skipped).runtime == "simulated"  # no vLLM environment configured: as before
    assert runtimes.choose({"status": "loaded", "tensorrt_llm": "1.3.0rc20"}, sys.executable,
                           checkpoint).runtime == "tensorrt_llm"  # TensorRT-LLM, where it loaded, comes first


def test_golden_records_of_a_vllm_candidate_are_recorded_by_vllm(vllm_standin, tiny_model, shared_data) -> None:
    """Where vLLM computed the gate's candidate, the golden continuations and subset answers are vLLM's (through the
    scorer): here, through the stand-in that computes as HF does in float32, the same records as HF's own."""
    import torch
    from transformers import AutoModelForCausalLM

    from enginewright.quant.models import load_tokenizer
    from enginewright.serving.golden import GOLDEN_PROMPTS
    from tasks.golden import record_golden, record_golden_on_runtime
    from tasks.runtimes.vllm import VllmLM

    tokenizer = load_tokenizer(tiny_model)
    prompts = list(GOLDEN_PROMPTS)[:4]
    lm = VllmLM(str(tiny_model), tokenizer, python=vllm_standin)
    try:
        by_vllm = record_golden_on_runtime(lm, prompts, 6, shared_data / "eval", ["arc_easy"])
    finally:
        lm.shutdown()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    by_hf = record_golden(model, tokenizer, prompts, 6, shared_data / "eval", ["arc_easy"])
    assert [(c.token_ids, c.text) for c in by_vllm.continuations] == [(c.token_ids, c.text) for c in by_hf.continuations]
    assert all(c.token_ids for c in by_vllm.continuations)  # ids come back from the scorer, not re-tokenized text
    assert len(by_vllm.answers) == len(by_hf.answers) == 40
    assert [a.answer for a in by_vllm.answers] == [a.answer for a in by_hf.answers]
