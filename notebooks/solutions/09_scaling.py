"""Worked solutions of notebook 09's exercises (``exercises.check`` runs them with ``VS_SOLVE=1``)."""

from __future__ import annotations

import math

import numpy as np


def exercise_1(n_images: float, bytes_per_vector: float, id_bytes: float) -> float:
    """Terabytes of RAM: every image costs its vector and its id."""
    return n_images * (bytes_per_vector + id_bytes) / 1e12


def exercise_2(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """Unpack the bytes into bits and count where the two codes differ."""
    return (np.unpackbits(codes_a, axis=1) != np.unpackbits(codes_b, axis=1)).sum(axis=1)


def exercise_3(n: np.ndarray, nbytes: np.ndarray) -> float:
    """Slope of log(bytes) against log(N), by the normal equations of a straight-line fit."""
    x, y = np.log(np.asarray(n, float)), np.log(np.asarray(nbytes, float))
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def exercise_4(qps_per_shard: float, peak_qps: float, min_replicas: int) -> int:
    """Enough copies of the shard set to carry the peak, and never fewer than the minimum."""
    return max(int(min_replicas), math.ceil(peak_qps / qps_per_shard))
