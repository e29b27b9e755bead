"""Statistics for comparing systems: bootstrap intervals and the two-proportion z-test.

Offline evaluation (:mod:`vs_lib.evaluate`) and online evaluation (:mod:`vs_lib.online`)
ask the same question, "is B better than A, and by how much?", about different numbers
(a metric averaged over queries; a click-through rate over impressions).  Both answer it
with an interval, computed here:

- :func:`bootstrap_ci`: resample the rows (queries, users) with replacement and take the
  percentiles of the resampled means; no assumption about the metric's distribution;
- :func:`bootstrap_ratio_difference`: the same for a difference of two ratios (CTR =
  clicks / impressions) when whole units (users) are resampled;
- :func:`two_proportion_ztest`: the textbook test of ``p_b = p_a`` for two click rates,
  which treats every impression as an independent trial;
- :func:`binomial_interval`: the interval of a rate counted over independent trials, e.g.
  the share of A/A tests that came out "significant".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def bootstrap_ci(
    values: ArrayLike, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile bootstrap interval of the mean, resampling rows.

    ``values`` ``(n,)`` or ``(n, m)``; returns ``(mean, low, high)``, each ``()`` or ``(m,)``.
    Resampling uses multinomial counts, so 10,000 rows × 1,000 resamples is one matrix
    product.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v[:, None] if squeeze else v
    n = v.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, v.shape[1]))
    for s in range(0, n_boot, 200):
        e = min(s + 200, n_boot)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=e - s)
        means[s:e] = counts @ v / n
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
    mean = v.mean(axis=0)
    if squeeze:
        return mean[0], lo[0], hi[0]
    return mean, lo, hi


@dataclass(frozen=True)
class ZTest:
    """A two-proportion z-test of ``p_b = p_a`` and a Wald interval of ``p_b − p_a``."""

    ctr_a: float
    ctr_b: float
    difference: float  # ctr_b - ctr_a
    relative_lift: float  # difference / ctr_a (nan when ctr_a is 0)
    z: float
    p_value: float  # two-sided
    ci_low: float
    ci_high: float


def two_proportion_ztest(clicks_a: int, n_a: int, clicks_b: int, n_b: int, alpha: float = 0.05) -> ZTest:
    """Two-sided z-test of ``p_b = p_a`` (pooled standard error) and a Wald interval of ``p_b − p_a``.

    ``z = (p_b − p_a) / sqrt(p (1 − p) (1/n_a + 1/n_b))`` with the pooled rate ``p``; the
    interval is ``p_b − p_a ± z_{1−alpha/2} · sqrt(p_a (1 − p_a)/n_a + p_b (1 − p_b)/n_b)``.
    Treats every impression as an independent trial; impressions of one session or user
    are correlated, so prefer a user-level bootstrap for the interval when they differ.
    """
    from scipy.stats import norm

    if min(n_a, n_b) <= 0:
        raise ValueError("both groups need at least one impression")
    if not (0 <= clicks_a <= n_a and 0 <= clicks_b <= n_b):
        raise ValueError(f"clicks must be between 0 and the impressions, got {clicks_a}/{n_a} and {clicks_b}/{n_b}")
    pa, pb = clicks_a / n_a, clicks_b / n_b
    pooled = (clicks_a + clicks_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (pb - pa) / se0 if se0 > 0 else 0.0
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    zc = float(norm.ppf(1 - alpha / 2))
    lift = (pb - pa) / pa if pa else float("nan")
    p_value = float(2 * norm.sf(abs(z)))
    values = (pa, pb, pb - pa, lift, z, p_value, pb - pa - zc * se, pb - pa + zc * se)
    return ZTest(*(float(v) for v in values))


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile bootstrap interval of a difference, and the share of resamples on each side of 0."""

    ci_low: float
    ci_high: float
    n_boot: int
    p_value: float  # two-sided: 2 × the smaller share of resampled differences on one side of 0


def bootstrap_ratio_difference(
    numerators_a: ArrayLike,
    denominators_a: ArrayLike,
    numerators_b: ArrayLike,
    denominators_b: ArrayLike,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Bootstrap interval of ``Σ num_b / Σ den_b − Σ num_a / Σ den_a``, resampling **units**.

    One entry per unit (e.g. per user: clicks and impressions); each group's units are
    resampled with replacement, so whatever correlates the trials of one unit (a user who
    clicks a lot) stays together and widens the interval as it should.
    """
    rng = np.random.default_rng(seed)
    ratios = []
    for num, den in ((numerators_a, denominators_a), (numerators_b, denominators_b)):
        x, n = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
        if x.shape != n.shape or x.ndim != 1 or len(x) == 0:
            raise ValueError(f"need one numerator and one denominator per unit, got shapes {x.shape} and {n.shape}")
        w = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=n_boot)
        ratios.append((w @ x) / (w @ n))
    diff = ratios[1] - ratios[0]
    lo, hi = np.quantile(diff, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    p_value = float(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean())))
    return BootstrapInterval(float(lo), float(hi), int(n_boot), p_value)


@dataclass(frozen=True)
class BinomialInterval:
    """A rate ``successes / n`` and its confidence interval (``method``: ``"wilson"`` or ``"exact"``)."""

    successes: int
    n: int
    rate: float
    ci_low: float
    ci_high: float
    method: str


def binomial_interval(successes: int, n: int, ci: float = 0.95, method: str = "wilson") -> BinomialInterval:
    """Confidence interval of a binomial rate, by SciPy (``scipy.stats.binomtest``).

    ``"wilson"``: the Wilson score interval, good coverage even for rates near 0;
    ``"exact"``: Clopper–Pearson, never below the nominal coverage (wider).  How well a run
    of ``n`` A/A tests pins down a false-positive rate: at 5 % the interval's half-width is
    about ``2·sqrt(0.05·0.95/n)`` — ±10 points at n = 20, ±3 points at n = 200.
    """
    from scipy.stats import binomtest

    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    lo, hi = binomtest(int(successes), int(n)).proportion_ci(confidence_level=ci, method=method)
    return BinomialInterval(int(successes), int(n), successes / n, float(lo), float(hi), method)
