"""Interval estimates and the z-test, checked against scipy and against their meaning:
an interval at 95% must cover the truth about 95% of the time, a test at 5% must reject a
true null about 5% of the time (measured over many simulated experiments)."""

import numpy as np
import pytest
from scipy.stats import binomtest, chi2_contingency

from vs_lib import stats


def _within_binomial_band(rate: float, p: float, trials: int, sigmas: float = 4.0) -> bool:
    """Is an observed rate compatible with probability ``p`` over ``trials`` independent runs?"""
    return abs(rate - p) <= sigmas * np.sqrt(p * (1 - p) / trials)


def test_bootstrap_ci_against_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=4000)
    mean, lo, hi = stats.bootstrap_ci(x, n_boot=2000, seed=1)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert mean == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)
    # columns are resampled together, each gets its own interval
    m2, lo2, hi2 = stats.bootstrap_ci(np.c_[x, 2 * x], n_boot=500)
    assert m2.shape == lo2.shape == (2,)
    assert hi2[1] - lo2[1] == pytest.approx(2 * (hi2[0] - lo2[0]))
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ci([])


def test_two_proportion_ztest_matches_chi_square():
    r = stats.two_proportion_ztest(120, 1000, 150, 1000)
    chi2, p, _, _ = chi2_contingency([[120, 880], [150, 850]], correction=False)
    assert r.z**2 == pytest.approx(chi2) and r.z > 0  # the pooled z-test is the 2x2 chi-square test
    assert r.p_value == pytest.approx(p)
    assert (r.ctr_a, r.ctr_b, r.difference, r.relative_lift) == pytest.approx((0.12, 0.15, 0.03, 0.25))
    assert stats.two_proportion_ztest(150, 1000, 120, 1000).z == pytest.approx(-r.z)
    with pytest.raises(ValueError, match="between 0 and the impressions"):
        stats.two_proportion_ztest(20, 10, 1, 10)


def test_ztest_rejects_a_true_null_at_its_level_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(1)
    n, trials = 3000, 4000
    # A/A: both arms click at 10%; a correct 5% test rejects about 5% of them
    a0, b0 = rng.binomial(n, 0.10, trials), rng.binomial(n, 0.10, trials)
    false_positives = np.mean(
        [stats.two_proportion_ztest(int(x), n, int(y), n).p_value < 0.05 for x, y in zip(a0, b0, strict=False)]
    )
    assert _within_binomial_band(false_positives, 0.05, trials)
    # A/B: 10% vs 13%; the 95% Wald interval covers the true difference 0.03 about 95% of the time
    a, b = rng.binomial(n, 0.10, trials), rng.binomial(n, 0.13, trials)
    tests = [stats.two_proportion_ztest(int(x), n, int(y), n) for x, y in zip(a, b, strict=False)]
    coverage = np.mean([t.ci_low <= 0.03 <= t.ci_high for t in tests])
    assert _within_binomial_band(coverage, 0.95, trials)


def test_user_bootstrap_is_calibrated_when_the_ztest_is_not():
    """Users differ in how much they click, so their impressions are correlated: the z-test,
    which counts impressions, finds "significant" differences between identical arms far too
    often; resampling users keeps its false-positive rate near the 5% it claims."""
    rng = np.random.default_rng(0)
    runs, n_users = 200, 150
    boot_fp = z_fp = 0
    for r in range(runs):
        p = rng.beta(1.0, 9.0, size=2 * n_users)  # personal click rates, mean 10%
        impressions = 5 + rng.poisson(40, size=2 * n_users)
        clicks = rng.binomial(impressions, p)
        a, b = slice(0, n_users), slice(n_users, None)
        interval = stats.bootstrap_ratio_difference(clicks[a], impressions[a], clicks[b], impressions[b], 400, seed=r)
        boot_fp += interval.ci_low > 0 or interval.ci_high < 0
        z = stats.two_proportion_ztest(
            int(clicks[a].sum()), int(impressions[a].sum()), int(clicks[b].sum()), int(impressions[b].sum())
        )
        z_fp += z.p_value < 0.05
    # a binomial test of the observed rate: compatible with 5% (the percentile bootstrap is a
    # little liberal with 150 users per arm, hence the two-sided check at the 0.1% level)
    assert binomtest(boot_fp, runs, 0.05).pvalue > 0.001
    assert z_fp / runs > 0.2


def test_bootstrap_ratio_difference_finds_a_real_difference():
    rng = np.random.default_rng(3)
    impressions = np.full(300, 50)
    clicks_a, clicks_b = rng.binomial(impressions, 0.10), rng.binomial(impressions, 0.14)
    got = stats.bootstrap_ratio_difference(clicks_a, impressions, clicks_b, impressions, 1000, seed=0)
    truth = clicks_b.sum() / impressions.sum() - clicks_a.sum() / impressions.sum()
    assert got.ci_low > 0 and got.p_value < 0.01
    # independent units with equal weights: the bootstrap interval is close to the normal one
    se = np.sqrt(np.var(clicks_a / 50, ddof=1) / 300 + np.var(clicks_b / 50, ddof=1) / 300)
    assert got.ci_low == pytest.approx(truth - 1.96 * se, abs=0.25 * se)
    assert got.ci_high == pytest.approx(truth + 1.96 * se, abs=0.25 * se)
    with pytest.raises(ValueError, match="one numerator and one denominator"):
        stats.bootstrap_ratio_difference([1, 2], [3], [1], [2])


@pytest.mark.parametrize(("successes", "n"), [(0, 20), (1, 20), (10, 200), (37, 400), (200, 200)])
def test_binomial_interval_against_the_beta_and_score_formulas(successes, n):
    from scipy.stats import beta, norm

    exact = stats.binomial_interval(successes, n, method="exact")
    # Clopper-Pearson from beta quantiles
    lo = beta.ppf(0.025, successes, n - successes + 1) if successes > 0 else 0.0
    hi = beta.ppf(0.975, successes + 1, n - successes) if successes < n else 1.0
    assert (exact.ci_low, exact.ci_high) == pytest.approx((lo, hi), abs=1e-9)
    # Wilson: the score interval, centre (x + z²/2) / (n + z²)
    wilson = stats.binomial_interval(successes, n)
    z, p = norm.ppf(0.975), successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert (wilson.ci_low, wilson.ci_high) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert wilson.rate == exact.rate == pytest.approx(p)
    assert wilson.ci_low <= p <= wilson.ci_high and exact.ci_low <= p <= exact.ci_high


def test_binomial_interval_covers_a_five_percent_rate_and_narrows_with_n():
    rng = np.random.default_rng(4)
    for n in (20, 200):
        hits, count = np.unique(rng.binomial(n, 0.05, 3000), return_counts=True)  # one interval per distinct count
        intervals = [stats.binomial_interval(int(h), n, method="exact") for h in hits]
        covers = np.array([i.ci_low <= 0.05 <= i.ci_high for i in intervals])
        assert (covers * count).sum() / count.sum() >= 0.94  # never below nominal
    wide, narrow = stats.binomial_interval(1, 20), stats.binomial_interval(10, 200)
    assert narrow.ci_high - narrow.ci_low < 0.5 * (wide.ci_high - wide.ci_low)
    with pytest.raises(ValueError):
        stats.binomial_interval(3, 2)
    with pytest.raises(ValueError):
        stats.binomial_interval(1, 10, method="normal")
