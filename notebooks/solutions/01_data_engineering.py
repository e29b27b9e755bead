"""Worked solutions to the exercises of notebook 01 (data engineering)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vs_lib import data


def exercise_1(db_path: str) -> float:
    """CTR at position 1 of the seed log: clicks / impressions, one SQL query."""
    conn = data.connect(db_path, readonly=True)
    try:
        (ctr,) = conn.execute(
            """
            SELECT CAST(SUM(type = 'click') AS REAL) / SUM(type = 'impression')
            FROM interactions
            WHERE source = 'seed-log' AND position = 1
            """
        ).fetchone()
    finally:
        conn.close()
    return float(ctr)


def exercise_2(interactions: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """Share of impressions showing an image of the query's class, for positions 1, 2, ..."""
    shown = interactions[(interactions["source"] == "seed-log") & (interactions["type"] == "impression")]
    same = labels[shown["query_image_id"].to_numpy()] == labels[shown["displayed_image_id"].to_numpy()]
    return pd.Series(same, index=shown["position"].to_numpy()).groupby(level=0).mean().sort_index().to_numpy()


def exercise_3(db_path: str) -> float:
    """CTR of the results whose tags equal the query's tags (= the same class), in SQL alone."""
    conn = data.connect(db_path, readonly=True)
    try:
        (ctr,) = conn.execute(
            """
            SELECT CAST(SUM(i.type = 'click') AS REAL) / SUM(i.type = 'impression')
            FROM interactions AS i
            JOIN images AS q ON q.id = i.query_image_id
            JOIN images AS d ON d.id = i.displayed_image_id
            WHERE i.source = 'seed-log' AND q.tags = d.tags
            """
        ).fetchone()
    finally:
        conn.close()
    return float(ctr)
