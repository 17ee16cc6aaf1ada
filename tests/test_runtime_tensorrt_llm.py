"""The candidate's runtime seam (tasks/runtimes): the choice of runtime, our own lm-eval model class for TensorRT-LLM
driven through the contract stand-in (tests/standins/tensorrt_llm: real result shapes, numbers from a PyTorch model),
its fallback to the simulated candidate, and the runtime-agreement check. TensorRT-LLM itself is unverified here."""

import shutil
import sys
from pathlib import Path

import pytest

from enginewright.config.spec import EvaluationSpec, GateSpec, RuntimeSpec
from enginewright.errors import RuntimeLaneFailed
from tasks import runtimes
from tasks.runtimes import RuntimeChoice
from tests.tiny_model import assert_loglikelihoods_match_hflm, work_dir_with

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(STANDINS))
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    import tensorrt_llm

    monkeypatch.setattr(tensorrt_llm, "PROMPT_TOKEN_IN_ENTRY", True)
    tensorrt_llm.CALLS.clear()
    return tensorrt_llm


def bundle_of(model_dir: Path, root: Path) -> Path:
    from tasks.runtime_config import write_llm_api_yaml

    shutil.copytree(model_dir, root / "checkpoint")
    write_llm_api_yaml(RuntimeSpec(), False, root / "llm_api.yaml")
    return root


def test_the_runtime_is_chosen_from_what_the_tensorrt_llm_step_found() -> None:
    skipped = runtimes.choose({"status": "skipped", "reason": "no CUDA GPU on this worker"})
    assert skipped.runtime == "simulated" and "no CUDA GPU" in skipped.reason
    old = runtimes.choose({"status": "loaded", "tensorrt_llm": "1.3.0rc10"})
    assert old.runtime == "simulated" and "≥ 1.3.0rc11" in old.reason and old.version == "1.3.0rc10"
    assert runtimes.choose({"status": "loaded", "tensorrt_llm": "1.2.0"}).runtime == "simulated"
    assert runtimes.choose({"status": "loaded", "tensorrt_llm": "1.3.0rc11"}).runtime == "tensorrt_llm"
    assert runtimes.choose({"status": "built", "tensorrt_llm": "1.3.0"}).runtime == "tensorrt_llm"


def test_a_continuation_token_is_read_from_the_entry_before_it() -> None:
    from tasks.runtimes.tensorrt_llm import continuation_logprob

    class Lp:
        def __init__(self, logprob: float, rank: int) -> None:
            self.logprob, self.rank = logprob, rank

    tokens = [5, 6, 7, 8]
    # entry i predicted token i + 1: entry 1 holds 7, entry 2 holds 8 (and a decoy at the token's own position)
    entries = [{6: Lp(-0.1, 1)}, {7: Lp(-0.5, 1), 6: Lp(-9.0, 2)}, {8: Lp(-2.0, 3), 7: Lp(-9.0, 1)}, {1: Lp(-0.2, 1)}]
    assert continuation_logprob(entries, tokens, ctxlen=2) == (-0.5 + -2.0, False)
    assert continuation_logprob(entries, tokens, ctxlen=2)[0] != -9.0 + -9.0  # lm-eval's stock reading, entry i
    with pytest.raises(RuntimeLaneFailed, match="token 8 at position 3 is missing.*entry 2"):
        continuation_logprob(entries[:2] + [{7: Lp(-1.0, 1)}], tokens, ctxlen=2)
    with pytest.raises(RuntimeLaneFailed, match="2 prompt log-probabilities for 4 tokens"):
        continuation_logprob(entries[:2], tokens, ctxlen=2)


def test_bundle_lm_loads_the_bundle_with_its_yaml_and_matches_hflm_loglikelihoods(standin, tiny_model, tmp_path):
    from tasks.runtimes.tensorrt_llm import BundleLM

    bundle = bundle_of(tiny_model, tmp_path / "bundle")
    lm = BundleLM(str(bundle), batch_size=4)
    name, kwargs = standin.CALLS[0]
    assert name == "LLM" and kwargs["model"] == str(bundle / "checkpoint") and "backend" not in kwargs
    assert kwargs["max_batch_size"] == RuntimeSpec().max_batch_size  # the bundle's llm_api.yaml, not defaults

    assert_loglikelihoods_match_hflm(lm, tiny_model)
    generate = [args for name, args in standin.CALLS if name == "generate"]
    params = generate[0][1]
    assert (params.max_tokens, params.prompt_logprobs, params.temperature) == (1, 1, 0.0)
    assert all(set(p) == {"prompt_token_ids"} for p in generate[0][0])


def test_an_unknown_sampling_field_is_refused_before_it_reaches_tensorrt_llm() -> None:
    from enginewright.serving.runtimes.tensorrt_llm import ContractError, check_sampling_params

    check_sampling_params({"max_tokens": 1, "prompt_logprobs": 1, "temperature": 0.0})
    with pytest.raises(ContractError, match="no field prompt_logprob;"):
        check_sampling_params({"prompt_logprob": 1})


@pytest.fixture(scope="module")
def built(tiny_model: Path, int8_sq_state, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    from tasks.eval_data import check_eval_data
    from tasks.runtime_config import write_llm_api_yaml

    root = tmp_path_factory.mktemp("runtime")
    state, work = work_dir_with(int8_sq_state, root, "r" * 64)
    write_llm_api_yaml(RuntimeSpec(), False, work.bundle / "llm_api.yaml")
    return tiny_model, state, work, check_eval_data(shared_data / "eval", ["arc_easy"], 0), root


def evaluate(built, runtime: RuntimeChoice):
    from tasks.evaluate import evaluate_until_decided

    model, state, work, data, root = built
    shutil.rmtree(work.evaluation, ignore_errors=True)  # each test starts its candidate sequences afresh
    spec = EvaluationSpec(tasks=["arc_easy"], limit=6, look_size=None, data_dir=data.data_dir, batch_size=4,
                          agreement_documents=4)
    return evaluate_until_decided(model, "rev", state, "bfloat16", spec, GateSpec(), data, root / "cache",
                                  root / "store", work, runtime=runtime)


TENSORRT_LLM = RuntimeChoice("tensorrt_llm", "stand-in", "1.3.0rc11")


def test_the_runtime_evaluates_the_candidate_and_its_agreement_with_the_simulated_one_is_recorded(
        standin, built, monkeypatch) -> None:
    # The stand-in has no quantized kernels: the unquantized model computes what "TensorRT-LLM" returns.
    monkeypatch.setenv("TENSORRT_LLM_STANDIN_WEIGHTS", str(built[0]))
    result = evaluate(built, TENSORRT_LLM)
    assert result.runtime["runtime"] == "tensorrt_llm" and result.runtime["version"] == "1.3.0rc11"
    agreement = result.runtime["agreement"]["arc_easy"]
    assert agreement["n"] == 4 and 0 <= agreement["same"] <= 4
    assert result.candidate.docs_evaluated == 6
    assert any(name == "LLM" and args["model"] == str(built[2].checkpoint) for name, args in standin.CALLS)

    from tasks.gate import evaluate_gate, runtime_markdown, runtime_section

    report = evaluate_gate(result.baseline.samples_path, result.candidate.samples_path, result.plans, GateSpec(),
                           EvaluationSpec(data_dir=built[3].data_dir, runtime_agreement_min=0.0), result.runtime)
    assert report["candidate_runtime"]["agreement"] == result.runtime["agreement"]
    assert report["candidate_runtime"]["agreement_low"] == []
    assert "tensorrt_llm" in runtime_markdown(report["candidate_runtime"])
    low = result.runtime | {"agreement": {"arc_easy": {"n": 100, "same": 90, "share": 0.9}}}
    assert runtime_section(low, 0.95)["agreement_low"] == ["arc_easy"]
    assert "low: arc_easy" in runtime_markdown(runtime_section(low, 0.95))


def test_a_runtime_that_returns_only_top_k_falls_back_to_the_simulated_candidate_with_the_reason(
        standin, built, monkeypatch) -> None:
    monkeypatch.setenv("TENSORRT_LLM_STANDIN_WEIGHTS", str(built[0]))
    monkeypatch.setattr(standin, "PROMPT_TOKEN_IN_ENTRY", False)  # as TensorRT-LLM before 1.3.0rc11
    result = evaluate(built, TENSORRT_LLM)
    assert result.runtime["runtime"] == "simulated" and result.runtime["agreement"] is None
    assert "runtime evaluation failed" in result.runtime["reason"] and "missing" in result.runtime["reason"]
    assert result.candidate.docs_evaluated == 6


def test_a_runtime_that_cannot_load_the_bundle_falls_back_too(standin, built, monkeypatch) -> None:
    monkeypatch.setenv("TENSORRT_LLM_STANDIN_WEIGHTS", str(built[4] / "no-such-model"))
    result = evaluate(built, TENSORRT_LLM)
    assert result.runtime["runtime"] == "simulated" and "TensorRT-LLM generate failed" in result.runtime["reason"]
