from itertools import pairwise

import pytest

pytestmark = pytest.mark.notebooks


def test_overview_notebook(run_notebook):
    r = run_notebook("00_overview")
    assert r["profile"] == "smoke"
    c = r["distance_contrast"]
    # distance concentration: the relative contrast falls steadily with the dimension
    values = [c[d] for d in ["2", "8", "32", "128", "512", "2048"]]
    assert all(a > b for a, b in pairwise(values))
    assert values[0] > 5 and values[-1] < 0.3
    # raw pixels are a real but imperfect baseline (reference on all 10k queries: P@1 0.856)
    assert 0.75 < r["raw_pixels_precision_at_1"] < 0.95
    assert 0.70 < r["raw_pixels_precision_at_10"] < 0.90
