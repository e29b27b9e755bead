import sqlite3

import numpy as np
import pytest
from scipy.stats import chi2_contingency

pytestmark = pytest.mark.notebooks


def test_online_evaluation_notebook(run_notebook, notebook_env):
    r = run_notebook("07_online_evaluation")
    week = r["week_a"]
    # every session shows a full screen of 10 results
    assert week["sessions"] > 100 and week["impressions"] == 10 * week["sessions"]
    assert 0.05 < week["ctr"] < 0.4  # the click model's range for a decent ranking
    # the A/B z-test, recomputed from the two arms' counts with scipy's chi-square test of the 2x2 table
    ab, arms = r["ab"], r["ab_summary"]
    clicks, imps = (arms["A"]["clicks"], arms["B"]["clicks"]), (arms["A"]["impressions"], arms["B"]["impressions"])
    chi2, p, _, _ = chi2_contingency([[c, n - c] for c, n in zip(clicks, imps, strict=True)], correction=False)
    assert ab["z"] ** 2 == pytest.approx(chi2) and ab["p_value"] == pytest.approx(p)
    assert ab["users_a"] + ab["users_b"] == r["n_users"]
    # users differ in how much they click: the user-level interval is wider than the impression-level one
    assert r["design_effect"] > 1.0
    needed = [r["sessions_needed"][k] for k in sorted(r["sessions_needed"], key=float)]
    assert needed == sorted(needed, reverse=True)  # smaller lifts need more traffic
    # position bias: the propensity estimated from randomised lists follows the true examination 1/i
    prop, truth = np.array(r["propensity"]), np.array(r["true_examination"])
    assert np.abs(prop - truth).mean() < 0.15, (prop, truth)
    # IPW undoes the position discount: closer to the true attraction than the naive click rate
    same_class = r["relevance_by_grade"]["5"]
    truth5 = same_class["true attract(g)"]
    assert abs(same_class["ipw"] - truth5) < abs(same_class["naive"] - truth5), same_class
    assert r["click_precision"] > 0.5
    # the log went into the notebook's database: exactly the rows reported
    with sqlite3.connect(notebook_env["VS_DB"]) as conn:
        (stored,) = conn.execute(
            "SELECT COUNT(*) FROM interactions WHERE source LIKE 'simulation:ab-%' AND synthetic = 1"
        ).fetchone()
    assert stored == r["rows_logged"] > 0
