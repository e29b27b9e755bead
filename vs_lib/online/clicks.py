"""The simulated user: a position-based click model with relevance-driven attraction and dwell.

``P(click at position i) = examine(i) * attract(grade_i)``: the user examines position
``i`` with probability ``1 / i**eta`` and clicks an examined result with a probability that
grows with its relevance grade (0–5); after a click she dwells for a log-normal time whose
median grows with the grade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .. import metrics


class SimulationError(ValueError):
    """A simulation asked for something impossible (unknown ids, empty pools, bad rates)."""


@dataclass(frozen=True)
class ClickModel:
    """Position-based click model with relevance-dependent attractiveness and dwell time.

    ``attract(g) = floor + (ceiling - floor) * (2**g - 1) / (2**5 - 1)``: grade 0 results
    are clicked by mistake (``floor``), grade 5 results most of the time they are seen.
    Dwell time after a click is log-normal with median ``dwell_base + dwell_per_grade * g``
    seconds and spread ``dwell_sigma``.  ``user_sigma`` > 0 gives every user a personal
    click propensity, a log-normal multiplier with mean 1 (some people click much more than
    others): the within-user correlation that makes impressions not independent trials.
    """

    eta: float = 1.0
    floor: float = 0.02
    ceiling: float = 0.6
    dwell_base: float = 3.0
    dwell_per_grade: float = 6.0
    dwell_sigma: float = 0.6
    user_sigma: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.floor <= self.ceiling <= 1):
            raise SimulationError(f"need 0 <= floor <= ceiling <= 1, got floor={self.floor}, ceiling={self.ceiling}")
        if min(self.eta, self.dwell_sigma, self.dwell_base, self.dwell_per_grade, self.user_sigma) < 0:
            raise SimulationError("eta, dwell_base, dwell_per_grade, dwell_sigma and user_sigma must be >= 0")

    def examine(self, positions: ArrayLike) -> np.ndarray:
        """Examination probability of 1-based ``positions``."""
        p = np.asarray(positions, dtype=np.float64)
        if (p < 1).any():
            raise SimulationError("positions are 1-based")
        return np.asarray(1.0 / p**self.eta)

    def attract(self, grades: ArrayLike) -> np.ndarray:
        """Click probability of an examined result of relevance ``grades`` (0–5)."""
        g = np.asarray(grades, dtype=np.float64)
        return self.floor + (self.ceiling - self.floor) * (2.0**g - 1) / (2.0**metrics.MAX_GRADE - 1)

    def click_probability(self, grades: ArrayLike, positions: ArrayLike | None = None) -> np.ndarray:
        """``examine(position) * attract(grade)``; positions default to 1..k along the last axis."""
        g = np.asarray(grades, dtype=np.float64)
        if positions is None:
            positions = np.arange(1, g.shape[-1] + 1)
        return self.examine(positions) * self.attract(g)

    def draw_clicks(
        self, grades: ArrayLike, multipliers: ArrayLike, rng: np.random.Generator, positions: ArrayLike | None = None
    ) -> np.ndarray:
        """Bool clicks, one draw per result: probability ``min(1, click_probability × multiplier)``.

        ``multipliers`` (the users' :meth:`user_multipliers`) broadcast against ``grades``.
        """
        p = np.minimum(1.0, self.click_probability(grades, positions) * np.asarray(multipliers, dtype=np.float64))
        return np.asarray(rng.random(p.shape) < p)

    def user_multipliers(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Personal click-propensity multipliers of ``n`` users (mean 1; all 1 when ``user_sigma`` = 0)."""
        if self.user_sigma == 0:
            return np.ones(n)
        return np.exp(self.user_sigma * rng.normal(size=n) - self.user_sigma**2 / 2)

    def dwell_median(self, grades: ArrayLike) -> np.ndarray:
        """Median dwell seconds after clicking a result of relevance ``grades``."""
        return self.dwell_base + self.dwell_per_grade * np.asarray(grades, dtype=np.float64)
