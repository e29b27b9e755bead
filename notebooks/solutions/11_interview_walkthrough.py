"""Worked solutions to the exercises of notebook 11 (the interview walk-through)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def exercise_1(sweep: Mapping[str, Mapping[str, Any]], tolerance: float) -> int:
    """The smallest embedding size whose MAP@R is within ``tolerance`` of the sweep's best."""
    best = max(row["MAP@R"] for row in sweep.values())
    return min(int(d) for d, row in sweep.items() if row["MAP@R"] >= best - tolerance)


def exercise_2(ctr_a: float, ctr_b: float) -> float:
    """System B's relative lift over system A."""
    return ctr_b / ctr_a - 1


def exercise_3(n_images: float, bytes_per_vector: float) -> float:
    """Terabytes of vectors: images x bytes per vector / 10^12."""
    return n_images * bytes_per_vector / 1e12
