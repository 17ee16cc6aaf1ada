"""Runtime fidelity per document: the simulated candidate's log-likelihoods beside vLLM's, on the gate's own requests
(`--side candidate`, the bundle's checkpoint); or the baseline's — the bf16 source under HF transformers — beside
the same source under vLLM (`--side baseline`, `--quantization none`): the runtime's own noise, the yardstick for
the first.

Two halves, because vLLM runs only on the GPU worker and the build's stack only here:

    # here: the token requests of the documents a build judged, made by the `vllm` runtime's own lm-eval class
    .venv/bin/python benchmarks/vllm_fidelity.py export --build-dir ~/.enginewright/builds/<key> --out requests.jsonl
    # on the GPU worker, in its vLLM environment: the scorer the `vllm` runtime starts, fed the same lines
    python benchmarks/vllm_fidelity.py score --requests requests.jsonl --checkpoint CKPT --out scores.jsonl
    # here again: per document, the answer each side picks, and how far the log-likelihoods are apart
    .venv/bin/python benchmarks/vllm_fidelity.py compare --build-dir ~/.enginewright/builds/<key> --scores scores.jsonl
    # a build whose candidate vLLM computed (ENGINEWRIGHT_VLLM_PYTHON set) keeps both sides of its agreement subset:
    python benchmarks/vllm_fidelity.py gaps --build-dir ~/.enginewright/builds/<key>

`score` needs only the standard library beside vLLM (it pipes the lines through tasks/runtimes/vllm_scorer.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def export(build_dir: Path, out: Path, data_dir: Path, num_fewshot: int, side: str = "candidate") -> None:
    sys.path.insert(0, str(ROOT))
    from enginewright.config.spec import EvaluationSpec
    from enginewright.quant.models import load_tokenizer
    from tasks.eval_data import check_eval_data
    from tasks.evaluate import evaluate_documents, read_records
    from tasks.runtimes.vllm import VllmLM

    records = read_records(build_dir / "evaluation" / f"{side}-samples.jsonl")
    checkpoint = build_dir / "bundle" / "checkpoint"  # its tokenizer is the source's
    tasks = sorted({r["task"] for r in records})

    class Recorder(VllmLM):
        """The runtime's own class, recording what it would send the scorer instead of sending it."""

        sent: list[dict[str, Any]] = []

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            self._instances, self._first = requests, len(self.sent)  # the spans come in request order, chunk by chunk
            return super().loglikelihood(requests, disable_tqdm=True)

        def score_spans(self, spans: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
            done = len(self.sent) - self._first
            for instance, (tokens, ctxlen) in zip(self._instances[done:done + len(spans)], spans, strict=True):
                self.sent.append({"task": instance.task_name, "doc_id": instance.doc_id, "idx": instance.idx,
                                  "tokens": tokens, "ctxlen": ctxlen})
            return [(0.0, False)] * len(spans)

    lm = Recorder(str(checkpoint), load_tokenizer(checkpoint), start=False)
    spec = EvaluationSpec(tasks=tasks, num_fewshot=num_fewshot, data_dir=data_dir)
    data = check_eval_data(data_dir, tasks, num_fewshot)
    documents = {task: [(r["subtask"], r["doc_id"]) for r in records if r["task"] == task] for task in tasks}
    evaluate_documents(lm, spec, documents, data, build_dir / "fidelity-cache")
    # lm-eval numbers the selected documents 0..k-1 in split order (evaluator.py maps them back the same way)
    selected = {task: sorted(doc for _, doc in docs) for task, docs in documents.items()}
    for row in Recorder.sent:
        row["doc_id"] = selected[row["task"]][row["doc_id"]]
    out.write_text("".join(json.dumps(r) + "\n" for r in Recorder.sent))
    print(f"{len(Recorder.sent)} requests of {len(records)} documents → {out}")


def score(requests: Path, checkpoint: Path, quantization: str | None, out: Path) -> None:
    rows = [json.loads(line) for line in requests.read_text().splitlines() if line.strip()]
    command = [sys.executable, str(ROOT / "tasks" / "runtimes" / "vllm_scorer.py"), "--model", str(checkpoint)]
    if quantization and quantization != "none":
        command += ["--quantization", quantization]
    message = json.dumps({"loglikelihood": [{"tokens": r["tokens"], "ctxlen": r["ctxlen"]} for r in rows]}) + "\n"
    answer = subprocess.run(command, input=message, stdout=subprocess.PIPE, text=True).stdout.splitlines()
    if len(answer) < 2:
        raise SystemExit(f"the vLLM scorer answered {len(answer)} of 2 lines (its log is above)")
    ready, results = json.loads(answer[0]), json.loads(answer[1])
    if "error" in results:
        raise SystemExit(results["error"])
    out.write_text("".join(json.dumps({"task": r["task"], "doc_id": r["doc_id"], "idx": r["idx"], "logprob": lp,
                                       "greedy": g}) + "\n" for r, (lp, g) in zip(rows, results["results"], strict=True)))
    print(f"vLLM {ready['ready']['vllm']} scored {len(rows)} requests (engine ready in {ready['ready']['seconds']:.0f} s)")


def gold_index(data_dir: Path, task: str, doc_id: int) -> int:
    """The right choice of an ARC or HellaSwag document (the evaluated split, in file order: lm-eval's doc ids)."""
    split = "validation" if task == "hellaswag" else "test"  # enginewright/config/eval_tasks.py's eval_split
    doc = json.loads((data_dir / task / f"{split}.jsonl").read_text().splitlines()[doc_id])
    if task == "hellaswag":
        return int(doc["label"])
    return list(doc["choices"]["label"]).index(doc["answerKey"])


def compare(build_dir: Path, scores: Path, data_dir: Path, side: str = "candidate") -> dict[str, Any]:
    """Per document: the answer the build's side picked (the gate's records) beside the one vLLM picks."""
    candidate = [json.loads(x) for x in (build_dir / "evaluation" / f"{side}-samples.jsonl").read_text().splitlines()]
    served: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for row in (json.loads(x) for x in scores.read_text().splitlines() if x.strip()):
        served.setdefault((row["task"], row["doc_id"]), []).append((row["idx"], row["logprob"]))
    same = both_right = only_simulated = only_vllm = 0
    gaps: list[float] = []
    for record in candidate:
        vllm = [lp for _, lp in sorted(served[(record["task"], record["doc_id"])])]
        simulated = record["loglikelihoods"]
        gold = gold_index(data_dir, record["task"], record["doc_id"])
        pick_sim, pick_vllm = simulated.index(max(simulated)), vllm.index(max(vllm))
        assert (pick_sim == gold) == bool(record["acc"]), "the records and the data disagree on the right answer"
        same += pick_sim == pick_vllm
        both_right += pick_sim == gold == pick_vllm
        only_simulated += pick_sim == gold != pick_vllm
        only_vllm += pick_vllm == gold != pick_sim
        gaps += [abs(a - b) for a, b in zip(simulated, vllm, strict=True)]
    gaps.sort()
    n = len(candidate)
    summary = {"side": side, "documents": n, "same_answer": same, "agreement": same / n,
               "acc_simulated": (both_right + only_simulated) / n, "acc_vllm": (both_right + only_vllm) / n,
               "right_only_simulated": only_simulated, "right_only_vllm": only_vllm,
               "loglikelihood_abs_diff_median": gaps[len(gaps) // 2],
               "loglikelihood_abs_diff_p90": gaps[int(0.9 * (len(gaps) - 1))]}
    print(json.dumps(summary, indent=1))
    return summary


def runtime_gaps(build_dir: Path) -> dict[str, Any]:
    """Inside one build whose candidate a real runtime computed: per document of the agreement subset, the runtime's
    records (evaluation/runtime/) beside the simulated candidate's (evaluation/candidate/), both made by the build."""
    def load(folder: str) -> dict[tuple[str, str, int], list[float]]:
        rows = {}
        for path in sorted((build_dir / "evaluation" / folder).glob("*.jsonl")):
            for line in path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    rows[(r["task"], r["subtask"], r["doc_id"])] = r["loglikelihoods"]
        return rows

    runtime, simulated = load("runtime"), load("candidate")
    pairs = [(runtime[k], simulated[k]) for k in simulated if k in runtime]
    gaps = sorted(abs(a - b) for r, s in pairs for a, b in zip(r, s, strict=True))
    same = sum(r.index(max(r)) == s.index(max(s)) for r, s in pairs)
    summary = {"documents": len(pairs), "same_answer": same, "agreement": same / max(len(pairs), 1),
               "loglikelihood_abs_diff_median": gaps[len(gaps) // 2] if gaps else None,
               "loglikelihood_abs_diff_p90": gaps[int(0.9 * (len(gaps) - 1))] if gaps else None}
    print(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("--build-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--side", choices=("candidate", "baseline"), default="candidate")
    p = sub.add_parser("score")
    p.add_argument("--requests", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--quantization", default="modelopt")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("compare")
    p.add_argument("--build-dir", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--side", choices=("candidate", "baseline"), default="candidate")
    p.add_argument("--out", type=Path, help="write the summary as JSON here too")
    p = sub.add_parser("gaps", help="a runtime build's own records: the runtime's beside the simulated candidate's")
    p.add_argument("--build-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, help="write the summary as JSON here too")
    args = parser.parse_args()
    summary = None
    if args.command == "export":
        export(args.build_dir, args.out, args.data_dir, args.num_fewshot, args.side)
    elif args.command == "score":
        score(args.requests, args.checkpoint, args.quantization, args.out)
    elif args.command == "compare":
        summary = compare(args.build_dir, args.scores, args.data_dir, args.side)
    else:
        summary = runtime_gaps(args.build_dir)
    if summary is not None and args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
