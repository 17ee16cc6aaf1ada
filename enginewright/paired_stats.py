"""Paired statistics for baseline vs candidate correctness on the same documents.

Both models answer the same questions, so the evidence is in the discordant pairs: McNemar's exact test
for "is there any difference", and a paired-bootstrap interval of the accuracy difference for "how big".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    n: int
    baseline_accuracy: float
    candidate_accuracy: float
    difference: float  # candidate - baseline, as a fraction (multiply by 100 for points)
    ci_low: float
    ci_high: float
    only_baseline_right: int  # discordant pairs b: baseline right, candidate wrong
    only_candidate_right: int  # discordant pairs c
    mcnemar_p: float
    recovery: float | None  # candidate / baseline accuracy; None when the baseline scores 0


def mcnemar_exact_p(only_baseline_right: int, only_candidate_right: int) -> float:
    """Two-sided exact McNemar test: a binomial test of b successes in b + c trials at p = 1/2."""
    trials = only_baseline_right + only_candidate_right
    if trials == 0:
        return 1.0
    k = min(only_baseline_right, only_candidate_right)
    tail = sum(math.comb(trials, i) for i in range(k + 1)) / 2**trials
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(
    baseline: np.ndarray, candidate: np.ndarray, iterations: int, seed: int, confidence: float
) -> tuple[float, float]:
    """Percentile interval of mean(candidate - baseline) over documents resampled with replacement."""
    differences = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = differences.size
    if n == 0:
        raise ValueError("no paired samples to compare")
    rng = np.random.default_rng(seed)
    means = np.empty(iterations)
    # Chunked so memory stays O(chunk × n) for large tasks.
    chunk = max(1, min(iterations, 2_000_000 // max(n, 1)))
    for start in range(0, iterations, chunk):
        stop = min(start + chunk, iterations)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = differences[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def compare_paired(
    baseline: np.ndarray, candidate: np.ndarray, iterations: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> PairedComparison:
    baseline = np.asarray(baseline, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if baseline.shape != candidate.shape or baseline.ndim != 1:
        raise ValueError(f"paired samples must be two 1-d arrays of one length, got {baseline.shape} and {candidate.shape}")
    b = int(np.sum((baseline == 1) & (candidate == 0)))
    c = int(np.sum((baseline == 0) & (candidate == 1)))
    low, high = paired_bootstrap_ci(baseline, candidate, iterations, seed, confidence)
    base_acc, cand_acc = float(baseline.mean()), float(candidate.mean())
    return PairedComparison(
        n=int(baseline.size), baseline_accuracy=base_acc, candidate_accuracy=cand_acc,
        difference=cand_acc - base_acc, ci_low=low, ci_high=high, only_baseline_right=b,
        only_candidate_right=c, mcnemar_p=mcnemar_exact_p(b, c),
        recovery=cand_acc / base_acc if base_acc > 0 else None,
    )


def samples_to_decide(comparison: PairedComparison, allowed_drop: float, confidence: float) -> int | None:
    """Roughly how many documents would put the interval on one side of -allowed_drop.

    Normal approximation: half-width z·sd/√n must shrink to the distance between the observed difference and
    the threshold. sd is estimated from the discordance rate. None when the difference sits on the threshold.
    """
    margin = abs(comparison.difference + allowed_drop)
    if margin == 0:
        return None
    discordant = (comparison.only_baseline_right + comparison.only_candidate_right) / comparison.n
    variance = max(discordant - comparison.difference**2, 1.0 / comparison.n)
    z = _normal_quantile(0.5 + confidence / 2)
    return math.ceil(z**2 * variance / margin**2)


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)
