"""The A/B test: a random split of users, a system per variant, and the statistics of the difference.

Users, not sessions or impressions, are randomised: a user sees one system for the whole
test.  The difference in CTR is tested with the two-proportion z-test
(:func:`vs_lib.stats.two_proportion_ztest`, every impression an independent trial) and
bracketed by a user-level bootstrap (:func:`bootstrap_ctr_difference`), the honest interval
when a user's impressions are correlated.  :func:`sessions_needed` is the power calculation;
:func:`aa_tests` runs hundreds of A/A tests (the same system in both arms) to check that a
test calls about ``alpha`` of them significant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .. import stats
from .analysis import split_log, summarize
from .clicks import ClickModel
from .simulate import SearchSystem, Users, simulate, user_locations


def assign_users(user_ids: ArrayLike, share_b: float = 0.5, seed: int = 0) -> pd.Series:
    """Random split of users into variants ``"A"`` / ``"B"`` (a user always sees one system)."""
    ids = np.asarray(user_ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    variants = np.where(rng.random(len(ids)) < share_b, "B", "A")
    return pd.Series(variants, index=pd.Index(ids, name="user_id"), name="variant")


def bootstrap_ctr_difference(
    log: pd.DataFrame, variant: pd.Series, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> stats.BootstrapInterval:
    """Bootstrap interval of CTR(B) − CTR(A), resampling **users** within each variant.

    Resampling users keeps each user's impressions together, so correlation within users
    and sessions widens the interval as it should (:func:`vs_lib.stats.bootstrap_ratio_difference`).
    """
    imp, clk = split_log(log)
    per_user = pd.DataFrame({"impressions": imp.groupby("user_id").size(), "clicks": clk.groupby("user_id").size()})
    per_user = per_user.fillna(0).join(variant, how="inner")
    a, b = (per_user[per_user["variant"] == v] for v in ("A", "B"))
    for v, grp in (("A", a), ("B", b)):
        if grp.empty:
            raise ValueError(f"variant {v} has no users with impressions")
    return stats.bootstrap_ratio_difference(
        a["clicks"], a["impressions"], b["clicks"], b["impressions"], n_boot, ci, seed
    )


def sessions_needed(
    ctr_a: float, relative_lift: float, k: int = 10, alpha: float = 0.05, power: float = 0.8, design_effect: float = 1.0
) -> int:
    """Sessions per variant for a two-sided two-proportion test to detect ``relative_lift``.

    Classic sample size for proportions (pooled variance under H0) in impressions, divided
    by the ``k`` impressions a session shows, times a ``design_effect`` ≥ 1 for the
    correlation of impressions within a session (1 = independent).
    """
    from scipy.stats import norm

    p1 = ctr_a
    p2 = ctr_a * (1 + relative_lift)
    if not (0 < p1 < 1 and 0 < p2 < 1) or relative_lift == 0:
        raise ValueError(f"need 0 < CTR < 1 before and after a non-zero lift, got {p1} -> {p2}")
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    pbar = (p1 + p2) / 2
    n_imp = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (
        p2 - p1
    ) ** 2
    return math.ceil(n_imp * design_effect / k)


@dataclass(frozen=True)
class ABTest(stats.ZTest):
    """The z-test of the A/B difference in CTR, plus the user-level bootstrap interval."""

    bootstrap_ci_low: float
    bootstrap_ci_high: float
    bootstrap_p_value: float
    users_a: int
    users_b: int


@dataclass
class ABResult:
    """An A/B test: the combined log (``variant`` column), the split, per-variant summaries, the test."""

    log: pd.DataFrame
    variant: pd.Series  # user_id -> "A" | "B"
    summary: pd.DataFrame  # one row per variant: the OnlineSummary fields
    test: ABTest
    names: dict[str, str] = field(default_factory=dict)  # variant -> system name


def ab_test(
    system_a: SearchSystem,
    system_b: SearchSystem,
    labels: ArrayLike,
    users: Users,
    query_pool: ArrayLike,
    *,
    share_b: float = 0.5,
    seed: int = 0,
    n_boot: int = 2000,
    names: Mapping[str, str] | None = None,
    **simulate_kwargs: Any,
) -> ABResult:
    """Split users at random, let each variant's users use its system, and test the CTR difference.

    ``simulate_kwargs`` go to :func:`simulate` (``k``, ``n_days``, ``click_model``, ...).
    """
    user_ids, _, _ = user_locations(users)
    variant = assign_users(user_ids, share_b, seed)
    names = dict(names or {"A": getattr(system_a, "name", "A"), "B": getattr(system_b, "name", "B")})
    logs: list[pd.DataFrame] = []
    for i, (v, system) in enumerate((("A", system_a), ("B", system_b))):
        members = variant.index[variant == v].to_numpy()
        group = users[users["id"].isin(members)] if isinstance(users, pd.DataFrame) else members
        lg = simulate(
            system, labels, group, query_pool, seed=seed * 1000 + i + 1, name=f"ab-{v}-{names[v]}", **simulate_kwargs
        )
        lg["variant"] = v
        lg["session_id"] += int(logs[-1]["session_id"].max()) if logs else 0
        logs.append(lg)
    summary = pd.DataFrame({v: asdict(summarize(lg)) for v, lg in zip("AB", logs, strict=True)}).T
    log = pd.concat(logs, ignore_index=True)
    log.attrs.update(logs[0].attrs)
    log.attrs["n_users"] = len(user_ids)
    clicks, imps = summary["clicks"].astype(int), summary["impressions"].astype(int)
    z = stats.two_proportion_ztest(clicks["A"], imps["A"], clicks["B"], imps["B"])
    boot = bootstrap_ctr_difference(log, variant, n_boot=n_boot, seed=seed)
    test = ABTest(
        **asdict(z),
        bootstrap_ci_low=boot.ci_low,
        bootstrap_ci_high=boot.ci_high,
        bootstrap_p_value=boot.p_value,
        users_a=int((variant == "A").sum()),
        users_b=int((variant == "B").sum()),
    )
    return ABResult(log, variant, summary, test, names)


@dataclass
class AATests:
    """``n`` A/A tests: one row per test in ``tests``, and the share each test called significant.

    ``tests`` columns: ``difference`` (CTR B − A), ``z``, ``p_value``, ``bootstrap_ci_low``,
    ``bootstrap_ci_high``, ``significant_z`` (p < alpha), ``significant_bootstrap`` (the
    user-level interval excludes 0).  ``false_positive_z`` / ``false_positive_bootstrap``:
    the share of tests significant by each, with its binomial interval — a correct test at
    level ``alpha`` has a rate of ``alpha``.
    """

    tests: pd.DataFrame
    alpha: float
    false_positive_z: stats.BinomialInterval
    false_positive_bootstrap: stats.BinomialInterval

    @property
    def n(self) -> int:
        return len(self.tests)


def aa_tests(
    log: pd.DataFrame,
    n_tests: int,
    *,
    click_model: ClickModel | None = None,
    share_b: float = 0.5,
    alpha: float = 0.05,
    n_boot: int = 500,
    seed: int = 0,
) -> AATests:
    """``n_tests`` A/A tests on the impressions of one system's simulated ``log``.

    Each test splits the users anew at random (:func:`assign_users`) and lets them click the
    results they were shown again — fresh personal click propensities and fresh draws from
    ``click_model`` (the one that made the log) — so both arms see the same system and every
    difference is chance.  Each is analysed like :func:`ab_test`: the two-proportion z-test
    and the user-level bootstrap interval (``n_boot`` resamples).  No system is searched
    again, so hundreds of tests take seconds.
    """
    if n_tests < 1:
        raise ValueError(f"n_tests must be >= 1, got {n_tests}")
    cm = click_model or ClickModel()
    imp, _ = split_log(log)
    if imp.empty:
        raise ValueError("the log has no impressions")
    users, row = np.unique(imp["user_id"].to_numpy(dtype=np.int64), return_inverse=True)
    grades, positions = imp["grade"].to_numpy(), imp["position"].to_numpy()
    shown = np.bincount(row, minlength=len(users)).astype(np.float64)
    rows = []
    for r in range(int(n_tests)):
        rng = np.random.default_rng([seed, r])
        mult = cm.user_multipliers(len(users), rng)
        clicked = cm.draw_clicks(grades, mult[row], rng, positions)
        clicks = np.bincount(row, weights=clicked, minlength=len(users))
        in_b = assign_users(users, share_b, seed=int(rng.integers(2**31))).to_numpy() == "B"
        if in_b.all() or not in_b.any():
            raise ValueError("a split left one arm empty; simulate more users")
        z = stats.two_proportion_ztest(
            int(clicks[~in_b].sum()), int(shown[~in_b].sum()), int(clicks[in_b].sum()), int(shown[in_b].sum()), alpha
        )
        boot = stats.bootstrap_ratio_difference(
            clicks[~in_b], shown[~in_b], clicks[in_b], shown[in_b], n_boot, 1 - alpha, int(rng.integers(2**31))
        )
        rows.append(
            {
                "difference": z.difference,
                "z": z.z,
                "p_value": z.p_value,
                "bootstrap_ci_low": boot.ci_low,
                "bootstrap_ci_high": boot.ci_high,
                "significant_z": z.p_value < alpha,
                "significant_bootstrap": boot.ci_low > 0 or boot.ci_high < 0,
            }
        )
    tests = pd.DataFrame(rows)
    n = len(tests)
    return AATests(
        tests,
        alpha,
        stats.binomial_interval(int(tests["significant_z"].sum()), n),
        stats.binomial_interval(int(tests["significant_bootstrap"].sum()), n),
    )
