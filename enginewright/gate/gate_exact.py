"""The gate's error rates computed exactly: a dynamic program over the paired counts, no simulation.

With independent documents, each one is discordant in the candidate's favour with probability `up` (candidate
right, baseline wrong), in the baseline's with `down`, concordant otherwise. The gate's rule
(`paired_stats.sequential_decision`) looks only at the cumulative counts (c, b) at each look, so the chance that
it passes (or fails) is a sum over the lattice of (c, b): carry the probability of every undecided (c, b) from look
to look — convolved with the trinomial of the look's new documents — and take off the cells where the rule
decides. What remains after the last look is the chance of "inconclusive". Exact up to floating point (the
convolution is an FFT: errors of order 1e-15).

This is what the Monte-Carlo test could not do to a tenth of a point (`tests/test_gate_exact.py` holds the rule's
false-pass rate to α on the margin with it), and where docs/gate.md's error figures come from
(`benchmarks/gate_power.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammaln, xlogy

from enginewright.gate.paired_stats import (
    FAIL_CORRECTION,
    PASS_CORRECTION,
    Z_LIMIT,
    null_variance,
    spending_boundaries,
)


@dataclass(frozen=True)
class ExactRates:
    passed: float  # P(the rule ends with "pass")
    failed: float  # P(the rule ends with "fail")

    @property
    def inconclusive(self) -> float:
        return max(0.0, 1.0 - self.passed - self.failed)


def trinomial(m: int, up: float, down: float) -> np.ndarray:
    """P(i documents up, j down) among `m` new documents, as an (m+1) × (m+1) grid (zero where i + j > m)."""
    i = np.arange(m + 1)[:, None]
    j = np.arange(m + 1)[None, :]
    rest = m - i - j
    same = 1.0 - up - down
    with np.errstate(invalid="ignore"):
        log_p = (gammaln(m + 1) - gammaln(i + 1) - gammaln(j + 1) - gammaln(np.maximum(rest, 0) + 1)
                 + xlogy(i, up) + xlogy(j, down) + xlogy(np.maximum(rest, 0), same))
    return np.where(rest >= 0, np.exp(log_p), 0.0)


def _reach(n: int, p: float) -> int:
    """A count of Binomial(n, p) beyond which the probability is below 1e-20: the lattice stops there, which keeps
    an 8,000-document plan to a grid of about a thousand squared instead of eight thousand."""
    return min(n, int(n * p + 10 * np.sqrt(n * p * (1 - p)) + 12))


def tango_z(n: int, c: np.ndarray, b: np.ndarray, delta: float, correction: float = 0.0) -> np.ndarray:
    """`paired_stats.tango_statistic` over arrays of counts (c: only candidate right, b: only baseline right)."""
    variance = n * null_variance(n, c, b, delta)
    numerator = c - b - n * delta + correction
    safe = np.where(variance > 0, variance, 1.0)
    z = np.where(variance > 0, numerator / np.sqrt(safe), np.sign(numerator) * Z_LIMIT)
    return np.clip(z, -Z_LIMIT, Z_LIMIT)


def exact_rates(plan: tuple[int, ...], up: float, down: float, margin: float, alpha_pass: float,
                alpha_fail: float) -> ExactRates:
    """P(pass) and P(fail) of the sequential rule for a plan (cumulative documents at each look)."""
    information = tuple(n / plan[-1] for n in plan)
    upper, lower = spending_boundaries(information, alpha_pass), spending_boundaries(information, alpha_fail)
    undecided = np.ones((1, 1))
    passed = failed = 0.0
    before = 0
    for k, n in enumerate(plan):
        undecided = np.clip(fftconvolve(undecided, trinomial(n - before, up, down)), 0.0, None)
        undecided = undecided[:_reach(n, up) + 1, :_reach(n, down) + 1]
        before = n
        c = np.arange(undecided.shape[0], dtype=float)[:, None]
        b = np.arange(undecided.shape[1], dtype=float)[None, :]
        possible = c + b <= n
        with np.errstate(invalid="ignore", divide="ignore"):
            passes = possible & (tango_z(n, c, b, -margin, -PASS_CORRECTION) >= upper[k])
            fails = possible & ~passes & (tango_z(n, c, b, -margin, FAIL_CORRECTION) <= -lower[k])
        passed += float(undecided[passes].sum())
        failed += float(undecided[fails].sum())
        undecided = np.where(passes | fails | ~possible, 0.0, undecided)
    return ExactRates(passed=passed, failed=failed)


def rates_at(plan: tuple[int, ...], discordance: float, true_difference: float, margin: float,
             alpha: float) -> ExactRates:
    """The same, by discordance (up + down) and true difference (up − down), both tests at `alpha`."""
    up, down = (discordance + true_difference) / 2, (discordance - true_difference) / 2
    if up < 0 or down < 0:
        raise ValueError(f"a true difference of {true_difference} is impossible at discordance {discordance}")
    return exact_rates(plan, up, down, margin, alpha, alpha)
