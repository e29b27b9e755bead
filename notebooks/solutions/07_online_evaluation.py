"""Worked solutions of notebook 07's exercises (``exercises.check`` runs them with ``VS_SOLVE=1``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm


def exercise_1(log: pd.DataFrame) -> dict[str, float]:
    """CTR = clicks / impressions; clicks per query = clicks / sessions."""
    clicks = int((log["type"] == "click").sum())
    impressions = int((log["type"] == "impression").sum())
    sessions = log["session_id"].nunique()
    return {"ctr": clicks / impressions, "clicks_per_query": clicks / sessions}


def exercise_2(significant: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate, written out."""
    n = len(significant)
    p = float(np.sum(significant)) / n
    z = norm.ppf(1 - (1 - ci) / 2)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return (centre - half, centre + half)


def exercise_3(log: pd.DataFrame, propensity: pd.Series) -> float:
    """IPW relevance of grade-5 results: Σ 1/propensity(position) over their clicks / their impressions."""
    ranked = log[~log["randomized"]]
    same = ranked[ranked["grade"] == 5]
    clicks = same[same["type"] == "click"]
    impressions = int((same["type"] == "impression").sum())
    weights = 1.0 / propensity.reindex(clicks["position"]).to_numpy()
    return float(weights.sum() / impressions)


def exercise_4(ctr_a: float, relative_lift: float, k: int, alpha: float, power: float) -> int:
    """Sessions per arm: the pooled-variance sample size in impressions, divided by k, rounded up."""
    p1, p2 = ctr_a, ctr_a * (1 + relative_lift)
    pbar = (p1 + p2) / 2
    z_alpha, z_power = norm.ppf(1 - alpha / 2), norm.ppf(power)
    impressions = (z_alpha * math.sqrt(2 * pbar * (1 - pbar)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2
    impressions /= (p2 - p1) ** 2
    return math.ceil(impressions / k)
