"""The gate's error rates by simulation: paired 0/1 outcomes drawn with a given discordance and true difference, run
through the gate's own rule (Tango's statistic, the planned looks, O'Brien–Fleming boundaries), fixed seeds.

- On the margin (true Δ = −margin) both nulls hold: false passes and false fails each stay within Monte-Carlo error
  of α — over discordance 1–15 %, 50–5,000 documents, one look (fixed n) and five looks (sequential).
- Below the margin (Δ = −2·margin) a pass is a false pass; above it (Δ = 0, harmless) a fail is a false fail.
"""

import math

import numpy as np
import pytest

from enginewright.gate.paired_stats import PairedCounts, look_plan, sequential_decision, sequential_power

ALPHA = 0.025
TRIALS = 2000
TOLERANCE = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / TRIALS)  # nominal + three Monte-Carlo standard errors


def verdict_rates(n: int, discordance: float, true_difference: float, margin: float, looks: int, seed: int,
                  ) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    up, down = (discordance + true_difference) / 2, (discordance - true_difference) / 2
    draws = rng.choice(np.array([1, -1, 0], dtype=np.int8), size=(TRIALS, n), p=[up, down, 1 - discordance])
    plan = look_plan(n, math.ceil(n / looks))
    cand_up = np.cumsum(draws == 1, axis=1)[:, np.array(plan) - 1]
    base_up = np.cumsum(draws == -1, axis=1)[:, np.array(plan) - 1]
    rates = {"pass": 0, "fail": 0, "inconclusive": 0}
    for c_row, b_row in zip(cand_up, base_up, strict=True):
        counts = [PairedCounts(k, int(c), int(b)) for k, c, b in zip(plan, c_row, b_row, strict=True)]
        rates[sequential_decision(counts, plan, margin, ALPHA, ALPHA).verdict] += 1
    return {k: v / TRIALS for k, v in rates.items()}


GRID = [(n, discordance) for n in (50, 250, 1000, 5000) for discordance in (0.01, 0.02, 0.05, 0.15)]


def margin_for(n: int, discordance: float) -> float:
    """A margin the grid point can decide at all: about the fixed-n test's 80 %-power margin, at least 0.5 points,
    and below the discordance (a margin wider than every discordant pair is not a test)."""
    return min(max(2.8 * math.sqrt(discordance / n), 0.005), 0.8 * discordance)


@pytest.mark.parametrize("looks", [1, 5])
@pytest.mark.parametrize(("n", "discordance"), GRID)
def test_on_the_margin_both_errors_stay_nominal(n: int, discordance: float, looks: int) -> None:
    margin = margin_for(n, discordance)
    rates = verdict_rates(n, discordance, -margin, margin, looks, seed=n + int(1000 * discordance) + looks)
    assert rates["pass"] <= TOLERANCE, f"false passes {rates['pass']:.4f} at margin {margin:.4f}"
    assert rates["fail"] <= TOLERANCE, f"false fails {rates['fail']:.4f} at margin {margin:.4f}"


@pytest.mark.parametrize(("n", "discordance"), [(250, 0.05), (1000, 0.02), (1000, 0.15)])
def test_away_from_the_margin_the_wrong_verdict_is_rare_and_the_right_one_common(n: int, discordance: float) -> None:
    margin = min(margin_for(n, discordance), 0.45 * discordance)  # Δ = −2·margin must be a possible truth
    worse = verdict_rates(n, discordance, -2 * margin, margin, 5, seed=1)
    harmless = verdict_rates(n, discordance, 0.0, margin, 5, seed=2)
    assert worse["pass"] <= TOLERANCE and harmless["fail"] <= TOLERANCE
    # The power the preflight promises (normal approximation) is what the simulation finds.
    predicted = sequential_power(n, math.ceil(n / 5), discordance, 0.0, margin, ALPHA)
    assert harmless["pass"] == pytest.approx(predicted, abs=0.05)
    assert worse["fail"] > 0.3


def clustered_rates(n: int, cluster_size: int, discordance: float, margin: float, shared: float, robust: bool,
                    seed: int) -> dict[str, float]:
    """On the margin, four looks, through benchmarks/clustered_gate.py's generator (documents in clusters of
    `cluster_size` that with probability `shared` all take one draw, scattered by a seeded order)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "clustered_gate.py"
    spec = importlib.util.spec_from_file_location("clustered_gate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rates(n=n, size=cluster_size, discordance=discordance, truth=-margin, margin=margin,
                        shared=shared, robust=robust, trials=TRIALS, seed=seed, looks=4)


@pytest.mark.parametrize("shared", [0.05, 0.21])
def test_clustered_documents_keep_both_errors_nominal_with_the_cluster_robust_variance(shared: float) -> None:
    """The statistician's finding: clusters of 4 at design effect 1.63 took the false-pass rate to 6.1 %. With the
    cluster-robust variance both errors are back within Monte-Carlo error of α; without it they are not."""
    robust = clustered_rates(800, 4, 0.15, 0.05, shared, robust=True, seed=11)
    assert robust["pass"] <= TOLERANCE and robust["fail"] <= TOLERANCE, robust
    if shared > 0.2:
        naive = clustered_rates(800, 4, 0.15, 0.05, shared, robust=False, seed=11)
        assert naive["pass"] > TOLERANCE and naive["fail"] > TOLERANCE, naive  # the bug this guards against


def test_the_design_effect_is_one_for_independent_documents_and_grows_with_shared_clusters() -> None:
    from enginewright.gate.paired_stats import design_effect

    rng = np.random.default_rng(3)
    independent = rng.choice([1.0, -1.0, 0.0], size=4000, p=[0.1, 0.1, 0.8])
    members = np.repeat(np.arange(1000), 4)
    assert design_effect(independent, members) == pytest.approx(1.0, abs=0.12)
    copied = np.repeat(independent[:1000], 4)  # every cluster one draw: variance × 4
    assert design_effect(copied, members) == pytest.approx(4.0, rel=0.05)
    assert design_effect(np.zeros(8), np.repeat(np.arange(2), 4)) == 1.0  # no discordance: nothing to estimate
