"""Paired statistics for baseline vs candidate correctness on the same documents.

Both models answer the same documents, so the evidence is the per-document difference
dᵢ = candidateᵢ − baselineᵢ ∈ {−1, 0, +1}: only the discordant pairs carry information. The question the gate asks
is one of **non-inferiority**: is the candidate's accuracy at most `margin` below the baseline's?

- pass test: H₀ Δ ≤ −margin against H₁ Δ > −margin (a pass is a rejection of "too much worse");
- fail test: H₀ Δ ≥ −margin against H₁ Δ < −margin.

One statistic, one rule, each test one-sided at level α:

- Tango's score test and interval for a difference of paired proportions (Tango 1998, Stat Med
  17:891–908; the constrained maximum-likelihood variance of Nam 1997). Unlike the Wald or the percentile
  bootstrap interval it stays non-degenerate with zero or few discordant pairs, and its size is close to nominal
  at small discordance (the simulation test `tests/test_gate_error_rates.py` checks this over a grid);
- **clustered documents** (HellaSwag's endings of one source video): Tango's variance assumes independent
  documents, and with clusters of 4 at a design effect of 1.63 its false-pass rate is 6.1 %. Where a task has
  clusters the statistic is divided by √(design effect) — the cluster-robust (sandwich) variance of the summed
  difference over the independent one, each with its small-sample factor, never below 1: a Rao–Scott-type first-
  order correction (Rao & Scott 1992, Biometrics 48:577–585, for clustered binary data), which keeps Tango's
  behaviour at zero or few discordant pairs and brings the false-pass rate back to α (the same simulation test);
- **sequential** — the same statistic at looks of K documents, against group-sequential boundaries from
  Lan–DeMets O'Brien–Fleming-type α spending (Lan & DeMets 1983, Biometrika 70:659–663; boundaries by numerical
  integration, Jennison & Turnbull 2000, "Group Sequential Methods", ch. 19). The plan — documents planned and
  look size — fixes the boundaries, so stopping at the first crossing keeps both error rates at α, and a rerun of
  the same plan continues where the last one stopped. A fixed-n test is the plan with one look.

McNemar's exact test ("is there *any* difference") is kept as a description; no decision uses it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

_NORMAL = NormalDist()


@dataclass(frozen=True)
class PairedCounts:
    """The 2×2 table of a paired comparison, reduced to what the difference depends on."""

    n: int
    only_candidate_right: int  # c: candidate right, baseline wrong
    only_baseline_right: int  # b: baseline right, candidate wrong
    design_effect: float = 1.0  # cluster-robust over independent variance of the summed difference (≥ 1)
    clusters: int | None = None  # clusters behind it; None: independent documents

    @classmethod
    def of(cls, baseline: np.ndarray, candidate: np.ndarray, clusters: Sequence[str] | None = None) -> PairedCounts:
        baseline, candidate = np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
        if baseline.shape != candidate.shape or baseline.ndim != 1:
            raise ValueError(f"paired samples must be two 1-d arrays of one length, got {baseline.shape} and "
                             f"{candidate.shape}")
        counts = cls(n=int(baseline.size), only_candidate_right=int(np.sum((candidate == 1) & (baseline == 0))),
                     only_baseline_right=int(np.sum((baseline == 1) & (candidate == 0))))
        if clusters is None:
            return counts
        if len(clusters) != baseline.size:
            raise ValueError(f"{len(clusters)} cluster labels for {baseline.size} documents")
        _, members = np.unique(np.asarray(clusters), return_inverse=True)
        effect = design_effect(candidate - baseline, members)
        return cls(counts.n, counts.only_candidate_right, counts.only_baseline_right, effect, int(members.max()) + 1)

    @property
    def difference(self) -> float:
        return (self.only_candidate_right - self.only_baseline_right) / self.n if self.n else 0.0

    @property
    def discordance(self) -> float:
        return (self.only_candidate_right + self.only_baseline_right) / self.n if self.n else 0.0


def design_effect(differences: np.ndarray, members: np.ndarray) -> float:
    """Var̂ of Σdᵢ with documents dependent within clusters (the sandwich: Σ_g (S_g − n_g·d̄)², × G/(G − 1)) over
    Var̂ assuming independence (Σᵢ (dᵢ − d̄)², × n/(n − 1)); 1 where it cannot be estimated or comes out below 1
    (the correction only ever widens)."""
    n, groups = differences.size, int(members.max()) + 1 if differences.size else 0
    centred = differences - differences.mean() if n else differences
    independent = float(centred @ centred)
    if n < 2 or groups < 2 or independent <= 0:
        return 1.0
    sums = np.bincount(members, weights=centred, minlength=groups)
    robust = float(sums @ sums) * groups / (groups - 1)
    return max(1.0, robust / (independent * n / (n - 1)))


def mcnemar_exact_p(only_baseline_right: int, only_candidate_right: int) -> float:
    """Two-sided exact McNemar test: a binomial test of b successes in b + c trials at p = 1/2."""
    from scipy.stats import (
        binomtest,  # here: scipy.stats costs ~0.6 s of imports, and `build --dry-run` needs none
    )

    trials = only_baseline_right + only_candidate_right
    if trials == 0:
        return 1.0
    return float(binomtest(only_baseline_right, trials, 0.5).pvalue)


Z_LIMIT = 1e3

# ---- fixed n: Tango's score test ------------------------------------------------------------------------------

def null_variance(n: float, c: Any, b: Any, delta: float) -> Any:
    """Per-document variance of the paired difference at the maximum-likelihood estimate under H₀: Δ = delta:
    2 q̂ + Δ(1 − Δ), q̂ the constrained estimate of P(only baseline right) (Tango 1998, eq. 3–5; his b, c are our
    c, b). Counts may be expected ones (fractions of n), and arrays of them (enginewright.gate.gate_exact): a float for
    floats, an array for arrays."""
    a2 = 2 * n
    b1 = -c - b + (2 * n - c + b) * delta
    c0 = -b * delta * (1 - delta)
    q = (np.sqrt(np.maximum(b1 * b1 - 4 * a2 * c0, 0.0)) - b1) / (2 * a2)
    variance = 2 * q + delta * (1 - delta)
    return float(variance) if np.ndim(variance) == 0 else variance


def tango_statistic(counts: PairedCounts, delta: float, correction: float = 0.0) -> float:
    """Tango's score statistic for H₀: Δ = delta, Δ = P(only candidate right) − P(only baseline right):
    Z = (c − b − nΔ) / √(n · null_variance · design effect). Z decreases in delta."""
    n, c, b = counts.n, counts.only_candidate_right, counts.only_baseline_right
    if n == 0:
        raise ValueError("no paired samples to compare")
    variance = n * null_variance(n, c, b, delta) * counts.design_effect
    numerator = c - b - n * delta + correction
    if variance <= 0:  # every document on one side of delta: as extreme as a finite JSON report can say
        return math.copysign(Z_LIMIT, numerator) if numerator else 0.0
    return max(-Z_LIMIT, min(Z_LIMIT, numerator / math.sqrt(variance)))


def tango_interval(counts: PairedCounts, confidence: float) -> tuple[float, float]:
    """Two-sided score interval of Δ: the deltas whose score test is not rejected at 1 − confidence."""
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    return _score_inversion(counts, z, z, pass_correction=0.0, fail_correction=0.0)


# ---- sequential: a group-sequential design with alpha spending -----------------------------------------------

def obrien_fleming_spent(t: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming-type spending: the one-sided α spent by information fraction t (α at t = 1).
    Spends almost nothing early, so the last look keeps nearly the fixed-n test's power."""
    if t <= 0:
        return 0.0
    return min(alpha, 2 * (1 - _NORMAL.cdf(_NORMAL.inv_cdf(1 - alpha / 2) / math.sqrt(min(t, 1.0)))))


def _simpson(lo: float, hi: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points from lo to hi (both included) and their Simpson weights, spaced at most `step`."""
    intervals = max(2, 2 * math.ceil((hi - lo) / (2 * step)))
    points = np.linspace(lo, hi, intervals + 1)
    weights = np.ones(intervals + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return points, weights * (hi - lo) / (3 * intervals)


def _score_process(information: tuple[float, ...], drift: float, spend: list[float] | None,
                   bounds: tuple[float, ...] | None) -> tuple[list[float], float]:
    """Walk the score process S(t) = Z·√t (Brownian motion with `drift`, in information time) over the looks,
    carrying its sub-density on the continuation region S < b_k by Simpson's rule on a grid that ends exactly at
    each boundary (Jennison & Turnbull 2000, "Group Sequential Methods", ch. 19). Either finds the boundaries that
    spend `spend[k]` at look k, or takes `bounds` and adds up the probability of crossing. Returns (Z boundaries,
    probability of crossing at some look)."""
    increments = np.diff((0.0,) + information)
    step = float(np.sqrt(increments.min())) / 6
    z_bounds: list[float] = []
    crossed, previous_t = 0.0, 0.0
    points = weights = np.zeros(0)
    for k, t in enumerate(information):
        sd, shift = math.sqrt(t - previous_t), drift * (t - previous_t)
        tail = functools.partial(_tail, first=k == 0, t=t, drift=drift, points=points, weights=weights, sd=sd,
                                 shift=shift)
        if bounds is not None:
            bound_s = bounds[k] * math.sqrt(t)
        elif spend is not None and spend[k] > 0:
            target, hi = spend[k], drift * t + 12 * math.sqrt(t)
            bound_s = (float(brentq(lambda b, target=target, tail=tail: tail(b) - target, -12.0, hi, xtol=1e-10))
                       if tail(-12.0) > target > tail(hi) else math.inf)
        else:
            bound_s = math.inf
        if math.isfinite(bound_s):
            crossed += tail(bound_s)
        lo = drift * t - 9 * math.sqrt(t)
        hi = min(bound_s, drift * t + 9 * math.sqrt(t))
        if hi <= lo:
            break
        new_points, rule = _simpson(lo, hi, step)
        if k == 0:
            density = np.exp(-0.5 * ((new_points - drift * t) / math.sqrt(t)) ** 2) / math.sqrt(2 * math.pi * t)
        else:
            kernel = np.exp(-0.5 * ((new_points[None, :] - points[:, None] - shift) / sd) ** 2)
            density = weights @ kernel / (sd * math.sqrt(2 * math.pi))
        points, weights = new_points, density * rule
        z_bounds.append(bound_s / math.sqrt(t))
        previous_t = t
    return z_bounds, crossed


def _tail(b: float, first: bool, t: float, drift: float, points: np.ndarray, weights: np.ndarray, sd: float,
          shift: float) -> float:
    """P(S_k ≥ b, no crossing before): at the first look from the normal law, later from the carried sub-density."""
    if first:
        return float(1 - _NORMAL.cdf((b - drift * t) / math.sqrt(t)))
    return float(np.sum(weights * (1 - ndtr((b - points - shift) / sd))))


@functools.cache
def spending_boundaries(information: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """Upper Z boundaries c₁…c_K of a one-sided group-sequential test at the information fractions `information`
    (increasing, last ≤ 1), so that under H₀ the chance of first crossing at look k is what the spending function
    allots to it: α·spent(t_k) − α·spent(t_{k−1})."""
    spent = [obrien_fleming_spent(t, alpha) for t in information]
    spend = [max(b - a, 0.0) for a, b in zip([0.0, *spent[:-1]], spent, strict=True)]
    bounds, _ = _score_process(information, 0.0, spend, None)
    return tuple(bounds) + (math.inf,) * (len(information) - len(bounds))


def crossing_probability(information: tuple[float, ...], bounds: tuple[float, ...], drift: float) -> float:
    """P(Z_k ≥ c_k at some look) when the score process drifts by `drift` per unit of information (the standardized
    distance of the truth from the null, times √(documents planned))."""
    return _score_process(information, drift, None, bounds)[1]


def look_plan(planned: int, look: int) -> tuple[int, ...]:
    """Cumulative documents at each look: look, 2·look, …, planned."""
    if planned <= 0:
        raise ValueError("a sequential plan needs at least one document")
    sizes = list(range(look, planned, look)) + [planned]
    return tuple(sizes)


# The fail test's statistic moves one discordant pair towards "no fail": uncorrected, Tango's lower tail is
# anti-conservative at small discordance (false fails 3.4 % for a 2.5 % test at n = 250, 5 % discordant). Half a
# pair still left corners above α, found by the exact computation (enginewright/gate/gate_exact.py): 2.93 % with one
# look of 800 at discordance = margin, 2.71 % in a 350-document plan, 3.40 % at 1,000 documents and a half-point
# margin; with one pair the worst over plans of 50–3,000 documents, margins of 0.5–10 points and discordances from
# the margin to 30 % is 2.37 % (tests/test_gate_exact.py), for 1.6 points less fail power at a 4.75-point drop.
FAIL_CORRECTION = 1.0
# The pass test's statistic moves a tenth of a discordant pair towards "no pass": uncorrected, its discreteness
# reached 2.95 % on the margin at 50 documents (0.5-point margin, 20 % discordance) and 2.53 % at 250 in looks of
# 100 (exact, the same grid as the fail test's); with a tenth of a pair the worst is 2.49 %, for 0.2 points of power
# (a harmless candidate on the main job's plan passes a task 94.2 % of the time instead of 94.5 %). A quarter pair
# also held α but halved the power of small, low-discordance plans (1 pt / 2 % / 250 documents: 12.2 % → 6.9 %).
PASS_CORRECTION = 0.1


@dataclass(frozen=True)
class LookDecision:
    look: int  # 1-based look at which the verdict was reached (or the last one evaluated)
    n: int  # documents behind it
    z: float  # Tango's statistic at Δ = −margin
    pass_bound: float  # Z at or above: pass
    fail_bound: float  # Z at or below minus this: fail
    verdict: str  # pass / fail / inconclusive


def sequential_decision(
    counts_by_look: list[PairedCounts], plan: tuple[int, ...], margin: float, alpha_pass: float, alpha_fail: float,
) -> LookDecision:
    """The first look whose statistic crosses a boundary decides; `counts_by_look` are cumulative, one per look
    evaluated so far (a prefix of `plan`). Both tests spend their α over the plan's information fractions."""
    if not counts_by_look:
        raise ValueError("no look evaluated")
    information = tuple(n / plan[-1] for n in plan)
    upper, lower = spending_boundaries(information, alpha_pass), spending_boundaries(information, alpha_fail)
    decision = None
    for k, counts in enumerate(counts_by_look):
        if counts.n != plan[k]:
            raise ValueError(f"look {k + 1} has {counts.n} documents; the plan has {plan[k]}")
        z = tango_statistic(counts, -margin, -PASS_CORRECTION)
        z_fail = tango_statistic(counts, -margin, FAIL_CORRECTION)
        verdict = "pass" if z >= upper[k] else "fail" if z_fail <= -lower[k] else "inconclusive"
        decision = LookDecision(look=k + 1, n=counts.n, z=z, pass_bound=upper[k], fail_bound=lower[k],
                                verdict=verdict)
        if verdict != "inconclusive":
            break
    assert decision is not None
    return decision


def tango_bounds(counts: PairedCounts, z_low: float, z_high: float) -> tuple[float, float]:
    """The deltas whose score statistic lies in [−z_high, z_low]: a repeated confidence interval at a look whose
    pass boundary is z_low and fail boundary z_high (Jennison & Turnbull's RCI). Each end uses its test's corrected
    statistic, so pass exactly when the lower end is above −margin and fail when the upper end is below."""
    return _score_inversion(counts, z_low, z_high, pass_correction=PASS_CORRECTION, fail_correction=FAIL_CORRECTION)


def _score_inversion(counts: PairedCounts, z_low: float, z_high: float, pass_correction: float, fail_correction: float,
                     ) -> tuple[float, float]:
    edge = 1 - 1e-12

    def root(target: float, lo: float, hi: float, correction: float) -> float:
        f = lambda d: tango_statistic(counts, d, correction) - target  # noqa: E731
        if f(lo) * f(hi) > 0:
            return lo if abs(f(lo)) < abs(f(hi)) else hi
        return float(brentq(f, lo, hi, xtol=1e-10))

    estimate = counts.difference
    low = (root(z_low, -edge, min(estimate, edge), -pass_correction)
           if estimate > -edge and math.isfinite(z_low) else -1.0)
    high = (root(-z_high, max(estimate, -edge), edge, fail_correction)
            if estimate < edge and math.isfinite(z_high) else 1.0)
    return low, high


# ---- power -----------------------------------------------------------------------------------------------------

def _variances(discordance: float, true_difference: float, margin: float) -> tuple[float, float]:
    """Per-document variance of the paired difference as Tango's statistic estimates it under H₀ (Δ = −margin,
    at the expected counts) and as it truly is; a score test's power needs both (the null one is the larger)."""
    up, down = (discordance + true_difference) / 2, (discordance - true_difference) / 2
    # Near a margin of the whole scale the constrained variance reaches 0 and rounds below it (found on the GPU run
    # with a 100-point margin: a math domain error in the gate); clamp both as the true one always was.
    return max(null_variance(1.0, up, down, -margin), 1e-12), max(discordance - true_difference**2, 1e-12)


def sequential_power(planned: int, look: int, discordance: float, true_difference: float, margin: float,
                     alpha: float, side: str = "pass") -> float:
    """Probability that the sequential pass (or fail) test reaches its verdict by the plan's end: the score process
    of Tango's statistic with its true variance against boundaries scaled by the null variance (normal
    approximation)."""
    plan = look_plan(planned, look)
    information = tuple(n / plan[-1] for n in plan)
    null, true = _variances(discordance, true_difference, margin)
    sign = 1.0 if side == "pass" else -1.0
    drift = sign * math.sqrt(planned) * (true_difference + margin) / math.sqrt(true)
    bounds = tuple(c * math.sqrt(null / true) for c in spending_boundaries(information, alpha))
    return crossing_probability(information, bounds, drift)


def fixed_n_power(n: int, discordance: float, true_difference: float, margin: float, alpha: float) -> float:
    """Probability that the fixed-n pass test passes (the same approximation, one look)."""
    return sequential_power(n, n, discordance, true_difference, margin, alpha) if n > 0 else 0.0


def documents_for_power(discordance: float, margin: float, alpha: float, power: float = 0.8) -> int:
    """Documents per task for the fixed-n pass test to pass a harmless candidate (Δ = 0) with `power`; the
    sequential plan needs a few per cent more (O'Brien–Fleming spending)."""
    null, true = _variances(discordance, 0.0, margin)
    za, zb = _NORMAL.inv_cdf(1 - alpha), _NORMAL.inv_cdf(power)
    return math.ceil((za * math.sqrt(null) + zb * math.sqrt(true)) ** 2 / margin**2)
