"""Evaluation look by look on a tiny Llama and real lm-eval runs: each side's records form one sequence in the seeded
order, a rerun continues it instead of starting over, and lm-eval labels every selected document correctly."""

import re
from pathlib import Path

import pytest

from enginewright.config.spec import EvaluationSpec, GateSpec
from tasks.eval_data import check_eval_data, document_order
from tasks.evaluate import evaluate_documents, evaluate_until_decided, read_records
from tests.tiny_model import work_dir_with


@pytest.fixture(scope="module")
def built(tiny_model: Path, int8_sq_state, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sequence")
    state, work = work_dir_with(int8_sq_state, root, "k" * 64)
    data = check_eval_data(shared_data / "eval", ["arc_easy"], 0)
    return tiny_model, state, work, data, root


def run(built, limit: int, look: int | None):
    model, state, work, data, root = built
    spec = EvaluationSpec(tasks=["arc_easy"], limit=limit, look_size=look, data_dir=data.data_dir, batch_size=4)
    # A margin a random model cannot cross either way: every look is inconclusive, the plan runs to its end.
    gate = GateSpec(max_drop_points=0.0001)
    return evaluate_until_decided(model, "rev", state, "bfloat16", spec, gate, data, root / "cache", root / "store",
                                  work)


def test_a_rerun_continues_the_sequence_and_a_larger_plan_evaluates_only_the_new_documents(built) -> None:
    first = run(built, limit=4, look=2)
    assert first.plans["arc_easy"].looks == (2, 4)
    assert (first.baseline.docs_evaluated, first.candidate.docs_evaluated) == (4, 4)
    records = read_records(first.candidate.samples_path)
    order = document_order(built[3], "arc_easy", seed=0)
    assert [(r["subtask"], r["doc_id"], r["position"]) for r in records] == [(*d, i) for i, d in enumerate(order[:4])]

    again = run(built, limit=4, look=2)
    assert (again.baseline.docs_evaluated, again.candidate.docs_evaluated) == (0, 0)
    assert read_records(again.candidate.samples_path) == records

    larger = run(built, limit=6, look=None)
    assert (larger.baseline.docs_evaluated, larger.candidate.docs_evaluated) == (2, 2)
    assert read_records(larger.candidate.samples_path)[:4] == records


def test_lm_eval_labels_an_unsorted_selection_correctly(built) -> None:
    """lm-eval maps the k-th selected document to samples[k] in split order; we pass sorted indices, so a document
    gets the same record (hash, answer) whichever documents share its call."""
    from lm_eval.models.huggingface import HFLM

    from enginewright.quant.models import load_model, load_tokenizer

    model, _, _, data, root = built
    lm = HFLM(pretrained=load_model(model, "bfloat16"), tokenizer=load_tokenizer(model), batch_size=4)
    spec = EvaluationSpec(tasks=["arc_easy"], data_dir=data.data_dir)
    together = evaluate_documents(lm, spec, {"arc_easy": [("arc_easy", 9), ("arc_easy", 3)]}, data, root / "cache")
    alone = evaluate_documents(lm, spec, {"arc_easy": [("arc_easy", 3)]}, data, root / "cache")
    assert [r["doc_id"] for r in together["arc_easy"]] == [9, 3]
    assert together["arc_easy"][1]["doc_hash"] == alone["arc_easy"][0]["doc_hash"]
    assert together["arc_easy"][0]["doc_hash"] != alone["arc_easy"][0]["doc_hash"]


def test_a_documents_few_shot_context_is_its_own_whichever_documents_share_its_call(built) -> None:
    """lm-eval draws each document's few-shot examples from one random stream in the order of the call's documents,
    so a document evaluated in another batch got another context (a stored baseline continued by a candidate looking
    in other batches failed the prompt check at every num_fewshot > 0). ARC at 5-shot: the same prompt alone, in a
    batch and in another batch; and the examples still differ between documents."""
    from lm_eval.models.huggingface import HFLM

    from enginewright.quant.models import load_model, load_tokenizer

    model, _, _, data, root = built
    data = check_eval_data(data.data_dir, ["arc_easy"], 5)
    lm = HFLM(pretrained=load_model(model, "bfloat16"), tokenizer=load_tokenizer(model), batch_size=4)
    spec = EvaluationSpec(tasks=["arc_easy"], data_dir=data.data_dir, num_fewshot=5)

    def prompts(indices: list[int]) -> dict[int, str]:
        records = evaluate_documents(lm, spec, {"arc_easy": [("arc_easy", i) for i in indices]}, data, root / "cache")
        return {r["doc_id"]: r["prompt_hash"] for r in records["arc_easy"]}

    batch, other, alone = prompts([3, 9, 12]), prompts([1, 2, 9]), prompts([9])
    assert batch[9] == other[9] == alone[9]
    assert len({batch[3], batch[9], batch[12]}) == 3


def test_a_look_shows_its_documents_on_a_bar_and_computes_exactly_as_without_it(built) -> None:
    """The bar names the look, the side and the tasks and counts the look's documents to the end (two tasks, four
    answer choices a document); the records are those of the same model without the bar."""
    import io

    from lm_eval.models.huggingface import HFLM
    from tqdm import tqdm

    from enginewright.quant.models import load_model, load_tokenizer
    from tasks.look_progress import LookProgress

    model, _, _, _, root = built
    data = check_eval_data(built[3].data_dir, ["arc_easy", "hellaswag"], 0)
    lm = HFLM(pretrained=load_model(model, "bfloat16"), tokenizer=load_tokenizer(model), batch_size=4)
    spec = EvaluationSpec(tasks=["arc_easy", "hellaswag"], data_dir=data.data_dir)
    documents = {"arc_easy": document_order(data, "arc_easy", 0)[:5],
                 "hellaswag": document_order(data, "hellaswag", 0)[:3]}
    shown = io.StringIO()

    def bar(**kwargs):
        return tqdm(file=shown, mininterval=0, ascii=True, **kwargs)

    plain = evaluate_documents(lm, spec, documents, data, root / "cache")
    with_bar = evaluate_documents(LookProgress(lm, "look 2 · baseline · arc_easy, hellaswag", bar), spec, documents,
                                  data, root / "cache")
    assert with_bar == plain
    lines = shown.getvalue().replace("\r", "\n").splitlines()
    assert any(line.startswith("look 2 · baseline · arc_easy, hellaswag:") and "8/8 [" in line for line in lines), lines
    counts = [int(m) for line in lines for m in re.findall(r" (\d+)/8 \[", line)]
    assert counts == sorted(counts) and len(set(counts)) > 2  # it moved while the model answered, not only at the end
    assert type(lm.cache_hook).__name__ == "CacheHook"  # lm-eval's own hook is back


class ScriptedSide:
    """A side whose answers are given: right on every document, or wrong on every one (no model, no lm-eval)."""

    def __init__(self, right: dict[str, bool]) -> None:
        self.right, self.asked = right, []

    def evaluate(self, documents, spec, data, cache_dir, desc):
        self.asked.append({t: len(docs) for t, docs in documents.items()})
        return {t: [{"task": t, "subtask": s, "doc_id": i, "doc_hash": f"{s}{i}", "prompt_hash": f"{s}{i}",
                     "acc": float(self.right[t]), "acc_norm": float(self.right[t])} for s, i in docs]
                for t, docs in documents.items()}


def test_a_failed_task_stops_the_undecided_ones_at_its_look(tmp_path: Path) -> None:
    """A build fails when any task fails, so the tasks still undecided stop at that look instead of running out
    their plans (a broken candidate's build spent minutes more on evaluation that could not change its verdict)."""
    from enginewright.gate.gate_decision import task_plan
    from tasks.evaluate import Sequence, evaluate_looks

    tasks = ["arc_easy", "hellaswag"]
    spec = EvaluationSpec(tasks=tasks, limit=600, look_size=200, data_dir=tmp_path)
    plans = {t: task_plan(t, 1000, spec) for t in tasks}
    orders = {t: [(t, i) for i in range(1000)] for t in tasks}
    # arc_easy: the candidate is wrong where the baseline is right (fails at the first look); hellaswag: both right
    # (a 0 % drop against a 0.0001-point margin: never decided before the plan's end).
    sides = {label: (ScriptedSide({"arc_easy": label == "baseline", "hellaswag": True}),
                     {t: Sequence(tmp_path / label / f"{t}.jsonl", "k") for t in tasks})
             for label in ("baseline", "candidate")}
    messages: list[str] = []
    reached, failed = evaluate_looks(tasks, orders, plans, sides, spec, GateSpec(max_drop_points=0.0001), None,
                                     tmp_path, messages.append)
    assert failed == ["arc_easy"] and reached == {"arc_easy": 200, "hellaswag": 200}
    assert sides["candidate"][0].asked == [{"arc_easy": 200, "hellaswag": 200}]  # one look, not three
    assert messages[-1] == ("arc_easy failed: the build fails whatever the other tasks show; hellaswag stop at "
                            "look 1")
