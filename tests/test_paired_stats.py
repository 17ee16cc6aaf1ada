"""The gate's statistics against reference values: statsmodels/scipy (McNemar), closed forms (Tango's interval with no
discordant pairs), published group-sequential boundaries (Lan–DeMets O'Brien–Fleming, as gsDesign tabulates)."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from statsmodels.stats.contingency_tables import mcnemar

from enginewright.gate.paired_stats import (
    PairedCounts,
    crossing_probability,
    documents_for_power,
    fixed_n_power,
    look_plan,
    mcnemar_exact_p,
    obrien_fleming_spent,
    sequential_decision,
    sequential_power,
    spending_boundaries,
    tango_bounds,
    tango_interval,
    tango_statistic,
)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (5, 5), (3, 17), (40, 22), (0, 9), (120, 80)])
def test_mcnemar_matches_statsmodels_and_scipy(b: int, c: int) -> None:
    table = [[10, b], [c, 7]]
    reference = mcnemar(table, exact=True).pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(reference, rel=1e-12, abs=1e-15)
    if b + c:
        assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize(("c", "b"), [(5, 9), (30, 12), (1, 0), (60, 61)])
def test_tango_at_no_difference_is_mcnemars_z(c: int, b: int) -> None:
    counts = PairedCounts(n=500, only_candidate_right=c, only_baseline_right=b)
    assert tango_statistic(counts, 0.0) == pytest.approx((c - b) / math.sqrt(b + c))


@pytest.mark.parametrize("n", [50, 250, 5000])
def test_tango_interval_without_discordant_pairs_has_a_width(n: int) -> None:
    # No discordant pair: Z(Δ) = √(n|Δ|/(1 − |Δ|)), so the bounds are ±z²/(n + z²), not the bootstrap's [0, 0].
    z = norm.ppf(0.975)
    low, high = tango_interval(PairedCounts(n, 0, 0), 0.95)
    assert low == pytest.approx(-z**2 / (n + z**2), rel=1e-6) and high == pytest.approx(z**2 / (n + z**2), rel=1e-6)


def test_tango_interval_inverts_the_test_and_approaches_wald() -> None:
    counts = PairedCounts(n=20_000, only_candidate_right=900, only_baseline_right=1100)
    low, high = tango_interval(counts, 0.95)
    assert tango_statistic(counts, low) == pytest.approx(norm.ppf(0.975), abs=1e-6)
    assert tango_statistic(counts, high) == pytest.approx(-norm.ppf(0.975), abs=1e-6)
    d, p = counts.difference, counts.discordance
    half = norm.ppf(0.975) * math.sqrt((p - d * d) / counts.n)
    assert low == pytest.approx(d - half, abs=2e-4) and high == pytest.approx(d + half, abs=2e-4)
    assert (low, high) == pytest.approx(tango_bounds(counts, norm.ppf(0.975), norm.ppf(0.975)), abs=1e-4)


def test_one_look_is_the_fixed_n_test() -> None:
    assert spending_boundaries((1.0,), 0.025) == pytest.approx((norm.ppf(0.975),))


def test_obrien_fleming_boundaries_match_the_published_table() -> None:
    # Lan–DeMets O'Brien–Fleming spending, 5 equally spaced looks, one-sided α = 0.025 (gsDesign sfLDOF).
    bounds = spending_boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.025)
    assert bounds == pytest.approx((4.8769, 3.3569, 2.6803, 2.2898, 2.0310), abs=0.005)


@pytest.mark.parametrize("looks", [(0.5, 1.0), (0.1, 0.25, 0.5, 0.75, 1.0), tuple(k / 20 for k in range(1, 21))])
def test_boundaries_spend_exactly_alpha_under_the_null(looks: tuple[float, ...]) -> None:
    bounds = spending_boundaries(looks, 0.025)
    assert crossing_probability(looks, bounds, 0.0) == pytest.approx(obrien_fleming_spent(looks[-1], 0.025), abs=2e-4)


def test_sequential_power_is_close_to_fixed_n_power() -> None:
    fixed = fixed_n_power(800, 0.05, 0.0, 0.03, 0.025)
    sequential = sequential_power(800, 100, 0.05, 0.0, 0.03, 0.025)
    assert 0.9 < sequential < fixed < 0.99
    assert sequential_power(800, 800, 0.05, 0.0, 0.03, 0.025) == pytest.approx(fixed, abs=0.002)


def test_documents_for_power_gives_the_power_asked_for() -> None:
    n = documents_for_power(0.05, 0.01, 0.025, 0.8)
    assert 3990 <= n <= 4060
    assert fixed_n_power(n, 0.05, 0.0, 0.01, 0.025) == pytest.approx(0.8, abs=0.003)


def test_sequential_decision_stops_at_the_first_crossing_and_checks_the_plan() -> None:
    plan = look_plan(1000, 250)
    assert plan == (250, 500, 750, 1000)
    same = [PairedCounts(n, 0, 0) for n in plan]  # identical answers: passes once the bound allows it
    decision = sequential_decision(same, plan, 0.03, 0.025, 0.025)
    assert decision.verdict == "pass" and decision.look == 2 and decision.z >= decision.pass_bound  # look 1: z 2.8 < 4.3
    worse = [PairedCounts(n, 0, n // 10) for n in plan]  # −10 points
    assert sequential_decision(worse, plan, 0.03, 0.025, 0.025).verdict == "fail"
    with pytest.raises(ValueError, match="the plan has 250"):
        sequential_decision([PairedCounts(200, 0, 0)], plan, 0.03, 0.025, 0.025)


def test_counts_of_arrays() -> None:
    base = np.array([1, 1, 0, 0, 1.0])
    cand = np.array([1, 0, 1, 0, 0.0])
    counts = PairedCounts.of(base, cand)
    assert (counts.only_candidate_right, counts.only_baseline_right, counts.n) == (1, 2, 5)
    assert counts.difference == pytest.approx(-0.2) and counts.discordance == pytest.approx(0.6)
    with pytest.raises(ValueError, match="one length"):
        PairedCounts.of(np.zeros(3), np.zeros(4))


def test_power_figures_stay_finite_for_a_margin_near_the_whole_scale() -> None:
    """Found on the H200 run: a 100-point margin (what the benchmarks use to let random weights pass) made the
    constrained variance negative (math domain error in the gate's 'documents needed'). Clamped, it stays finite."""
    from enginewright.gate.paired_stats import documents_for_power, sequential_power

    for discordance in (0.0016006003001500751, 0.05, 0.3):  # the first rounds to -2.2e-16 at a margin of 1.0
        for margin in (0.9, 0.99, 1.0):
            assert 1 <= documents_for_power(discordance, margin, 0.025) < 10
            assert 0.0 <= sequential_power(800, 100, discordance, 0.0, margin, 0.025) <= 1.0
