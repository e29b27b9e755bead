"""Worked solutions to the exercises of notebook 02 (feature engineering)."""

from __future__ import annotations

import numpy as np


def exercise_1(train_images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of every training pixel, scaled to [0, 1]."""
    x = train_images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())


def exercise_2(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The z-scored image the model receives: bytes / 255, minus the training mean, over the training std."""
    return ((image.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def exercise_3(image16: np.ndarray) -> np.ndarray:
    """A 16-bit image rescaled linearly from its own min..max to 0..255, rounded to uint8."""
    a = image16.astype(np.float64)
    lo, hi = a.min(), a.max()
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)
