"""The gate's statistics against reference implementations (statsmodels, scipy) on synthetic paired data."""

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap
from statsmodels.stats.contingency_tables import mcnemar

from enginewright.paired_stats import compare_paired, mcnemar_exact_p, paired_bootstrap_ci, samples_to_decide


def synthetic(n: int, base_rate: float, flip_down: float, flip_up: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = (rng.random(n) < base_rate).astype(float)
    cand = base.copy()
    cand[(base == 1) & (rng.random(n) < flip_down)] = 0
    cand[(base == 0) & (rng.random(n) < flip_up)] = 1
    return base, cand


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (5, 5), (3, 17), (40, 22), (0, 9), (120, 80)])
def test_mcnemar_matches_statsmodels_and_scipy(b: int, c: int) -> None:
    table = [[10, b], [c, 7]]
    reference = mcnemar(table, exact=True).pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(reference, rel=1e-12, abs=1e-15)
    if b + c:
        assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_interval_agrees_with_scipy(seed: int) -> None:
    base, cand = synthetic(1172, 0.45, 0.12, 0.08, seed)  # ARC-Challenge-sized
    low, high = paired_bootstrap_ci(base, cand, iterations=20_000, seed=seed, confidence=0.95)
    ref = bootstrap((base, cand), lambda x, y, axis: np.mean(y - x, axis=axis), paired=True, vectorized=True,
                    n_resamples=20_000, confidence_level=0.95, method="percentile", random_state=seed + 100)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.003)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.003)
    assert low < np.mean(cand - base) < high


def test_bootstrap_is_seeded() -> None:
    base, cand = synthetic(300, 0.5, 0.1, 0.1, 0)
    assert paired_bootstrap_ci(base, cand, 2000, 7, 0.95) == paired_bootstrap_ci(base, cand, 2000, 7, 0.95)
    assert paired_bootstrap_ci(base, cand, 2000, 7, 0.95) != paired_bootstrap_ci(base, cand, 2000, 8, 0.95)


def test_known_answer_drop() -> None:
    # 1000 docs, baseline right on 600; candidate loses 50 of them and gains 10: -4 points exactly.
    base = np.zeros(1000)
    base[:600] = 1
    cand = base.copy()
    cand[:50] = 0
    cand[600:610] = 1
    result = compare_paired(base, cand, iterations=5000, seed=0)
    assert result.difference == pytest.approx(-0.04)
    assert (result.only_baseline_right, result.only_candidate_right) == (50, 10)
    assert result.recovery == pytest.approx(0.56 / 0.60)
    assert result.mcnemar_p == pytest.approx(mcnemar([[550, 50], [10, 390]], exact=True).pvalue)
    assert -0.058 < result.ci_low < -0.04 < result.ci_high < -0.022


def test_identical_models_have_no_discordant_pairs() -> None:
    base, _ = synthetic(500, 0.4, 0, 0, 3)
    result = compare_paired(base, base.copy())
    assert (result.only_baseline_right, result.only_candidate_right) == (0, 0)
    assert result.mcnemar_p == 1.0
    assert result.ci_low == result.ci_high == 0.0
    assert result.recovery == 1.0


def test_all_wrong() -> None:
    zeros = np.zeros(50)
    result = compare_paired(zeros, zeros)
    assert result.baseline_accuracy == 0 and result.recovery is None and result.mcnemar_p == 1.0


def test_one_sample() -> None:
    result = compare_paired(np.array([1.0]), np.array([0.0]), iterations=200)
    assert result.n == 1 and result.difference == -1.0
    assert result.ci_low == result.ci_high == -1.0
    assert result.mcnemar_p == 1.0  # one discordant pair cannot be significant


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="paired samples"):
        compare_paired(np.zeros(3), np.zeros(4))


def test_samples_to_decide_shrinks_with_a_larger_margin() -> None:
    base, cand = synthetic(200, 0.5, 0.1, 0.06, 1)
    result = compare_paired(base, cand, iterations=2000)
    near = samples_to_decide(result, allowed_drop=-result.difference + 0.005, confidence=0.95)
    far = samples_to_decide(result, allowed_drop=-result.difference + 0.05, confidence=0.95)
    assert near is not None and far is not None and near > far
    assert samples_to_decide(result, allowed_drop=-result.difference, confidence=0.95) is None
