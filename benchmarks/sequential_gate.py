"""Documents and minutes the sequential gate saves against the fixed-n gate, on real records.

Input: the per-sample records of a build that evaluated every local document of its tasks (`evaluation.limit:
null, look_size: null`), e.g. `~/.enginewright/builds/<key>/evaluation/{baseline,candidate}-samples.jsonl`.
For each of --orders seeded document orders (the gate's own `document_order`), the same plan (`--limit` documents
per task, or all) is judged twice from those records: sequentially with looks of --look documents, and fixed-n at
the plan's end. Both tests have the same error rates (tests/test_gate_error_rates.py). Minutes come from the
measured evaluation speed of each side (docs/s, from the build's MLflow metrics `baseline.docs_per_second`,
`candidate.docs_per_second`). Prints a markdown table.

    .venv/bin/python benchmarks/sequential_gate.py --records DIR --baseline-dps 14.5 --candidate-dps 6.4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from enginewright.config.spec import EvaluationSpec, GateSpec
from enginewright.gate.gate_decision import decide, metric_of, paired_sequence, task_plan
from tasks.eval_data import check_eval_data, document_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True, help="dir with baseline-/candidate-samples.jsonl")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/eval")
    parser.add_argument("--limit", type=int, default=None, help="documents planned per task (default: all)")
    parser.add_argument("--look", type=int, default=100)
    parser.add_argument("--max-drop", type=float, default=3.0)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--baseline-dps", type=float, required=True)
    parser.add_argument("--candidate-dps", type=float, required=True)
    args = parser.parse_args()

    read = lambda name: [json.loads(x) for x in (args.records / name).read_text().splitlines() if x]  # noqa: E731
    baseline, candidate = read("baseline-samples.jsonl"), read("candidate-samples.jsonl")
    tasks = sorted({r["task"] for r in baseline})
    data = check_eval_data(args.data, tasks, 0)
    gate = GateSpec(max_drop_points=args.max_drop)
    seconds_per_doc = 1 / args.baseline_dps + 1 / args.candidate_dps
    print(f"plan: {args.limit or 'all'} documents per task, looks of {args.look}, allowed drop {args.max_drop} "
          f"points; {args.orders} seeded orders; {seconds_per_doc:.3f} s per paired document\n")
    print("| task | planned | sequential docs (mean, min–max) | fixed-n docs | saved | verdicts sequential "
          "(pass/fail/inc.) | verdicts fixed-n | agree |")
    print("|---|---|---|---|---|---|---|---|")
    total_seq = total_fixed = 0.0
    for task in tasks:
        by_key = {side: {(r["subtask"], r["doc_id"]): r for r in rows if r["task"] == task}
                  for side, rows in (("b", baseline), ("c", candidate))}
        used, seq_verdicts, fixed_verdicts, agree = [], [], [], 0
        for seed in range(args.orders):
            order = document_order(data, task, seed)
            evaluation = EvaluationSpec(data_dir=args.data, limit=args.limit, look_size=args.look, sample_seed=seed)
            plan = task_plan(task, len(order), evaluation)
            fixed_plan = task_plan(task, len(order), evaluation.model_copy(update={"look_size": None}))
            b = [dict(by_key["b"][k], position=i) for i, k in enumerate(order[:plan.planned])]
            c = [dict(by_key["c"][k], position=i) for i, k in enumerate(order[:plan.planned])]
            base, cand, _, _ = paired_sequence(b, c, task, metric_of(task, gate))
            sequential = decide(base, cand, plan, gate, len(tasks))
            fixed = decide(base, cand, fixed_plan, gate, len(tasks))
            assert sequential is not None and fixed is not None
            used.append(sequential.decision.n)
            seq_verdicts.append(sequential.decision.verdict)
            fixed_verdicts.append(fixed.decision.verdict)
            agree += sequential.decision.verdict == fixed.decision.verdict
        count = lambda vs: "/".join(str(vs.count(v)) for v in ("pass", "fail", "inconclusive"))  # noqa: E731
        mean = float(np.mean(used))
        total_seq += mean
        total_fixed += plan.planned
        print(f"| {task} | {plan.planned} | {mean:.0f} ({min(used)}–{max(used)}) | {plan.planned} | "
              f"{100 * (1 - mean / plan.planned):.0f} % | {count(seq_verdicts)} | {count(fixed_verdicts)} | "
              f"{agree}/{args.orders} |")
    saved_min = (total_fixed - total_seq) * seconds_per_doc / 60
    print(f"\nall tasks: {total_seq:.0f} documents per side on average instead of {total_fixed:.0f} "
          f"({100 * (1 - total_seq / total_fixed):.0f} % fewer); evaluation {total_seq * seconds_per_doc / 60:.1f} "
          f"instead of {total_fixed * seconds_per_doc / 60:.1f} minutes on this machine ({saved_min:.1f} saved)")


if __name__ == "__main__":
    main()
