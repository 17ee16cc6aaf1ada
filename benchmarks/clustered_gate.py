"""The gate's error rates on clustered documents, with and without the cluster-robust variance: prints a table.

Documents come in clusters of `--cluster-size` (HellaSwag: the endings written for one source video); with
probability `shared` a cluster's documents all take one draw (intra-cluster correlation `shared`, design effect
1 + (m − 1)·shared), and a seeded order scatters them as the gate's document order does. Each row runs the gate's own
rule (Tango's statistic, O'Brien–Fleming looks) on the margin (true Δ = −margin: false pass / false fail) and at
Δ = 0 (a harmless candidate: the power the correction costs).

    .venv/bin/python benchmarks/clustered_gate.py --trials 20000
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from enginewright.gate.paired_stats import PairedCounts, look_plan, sequential_decision


def rates(n: int, size: int, discordance: float, truth: float, margin: float, shared: float, robust: bool,
          trials: int, seed: int, looks: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    up, down = (discordance + truth) / 2, (discordance - truth) / 2
    values, p = np.array([1, -1, 0], dtype=np.int8), [up, down, 1 - discordance]
    groups = n // size
    own = rng.choice(values, size=(trials, n), p=p)
    common = np.repeat(rng.choice(values, size=(trials, groups), p=p), size, axis=1)
    draws = np.where(np.repeat(rng.random((trials, groups)) < shared, size, axis=1), common, own)
    order = rng.permutation(n)
    draws, labels = draws[:, order], np.repeat(np.arange(groups), size)[order].astype(str)
    plan = look_plan(n, math.ceil(n / looks))
    found = {"pass": 0, "fail": 0, "inconclusive": 0}
    for row in draws:
        cand, base = (row == 1).astype(float), (row == -1).astype(float)
        counts = [PairedCounts.of(base[:k], cand[:k], labels[:k] if robust else None) for k in plan]
        found[sequential_decision(counts, plan, margin, 0.025, 0.025).verdict] += 1
    return {k: v / trials for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--documents", type=int, default=800)
    parser.add_argument("--cluster-size", type=int, default=4)
    parser.add_argument("--discordance", type=float, default=0.15)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--looks", type=int, default=4)
    args = parser.parse_args()
    print(f"{args.documents} documents in clusters of {args.cluster_size}, discordance {args.discordance:.0%}, "
          f"margin {100 * args.margin:g} points, {args.looks} looks, α = 2.5 % per test, {args.trials} trials a cell\n")
    print(f"{'design effect':>13} {'variance':>15} {'false pass':>11} {'false fail':>11} {'pass at Δ = 0':>14}")
    for shared in (0.0, 0.05, 0.10, 0.21):
        deff = 1 + (args.cluster_size - 1) * shared
        for robust in (False, True):
            common = dict(n=args.documents, size=args.cluster_size, discordance=args.discordance, margin=args.margin,
                          shared=shared, robust=robust, trials=args.trials, looks=args.looks)
            on_margin = rates(truth=-args.margin, seed=1, **common)
            harmless = rates(truth=0.0, seed=2, **common)
            print(f"{deff:>13.2f} {'cluster-robust' if robust else 'independent':>15} {on_margin['pass']:>11.2%} "
                  f"{on_margin['fail']:>11.2%} {harmless['pass']:>14.1%}")


if __name__ == "__main__":
    main()
