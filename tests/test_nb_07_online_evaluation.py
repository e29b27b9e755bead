import numpy as np
import pytest

pytestmark = pytest.mark.notebooks


def test_online_evaluation_notebook(run_notebook):
    r = run_notebook("07_online_evaluation")
    week = r["week_a"]
    assert week["sessions"] > 100 and week["impressions"] == 10 * week["sessions"]
    assert 0.05 < week["ctr"] < 0.4  # the click model's range for a decent ranking
    assert week["time_spent_per_user_week_s"] == pytest.approx(7 * week["time_spent_per_user_day_s"])
    ab = r["ab"]
    assert ab["users_a"] + ab["users_b"] == r["n_users"]
    assert ab["ci_low"] <= ab["difference"] <= ab["ci_high"]
    assert ab["bootstrap_ci_low"] <= ab["difference"] <= ab["bootstrap_ci_high"]
    assert 0 <= ab["p_value"] <= 1
    assert r["design_effect"] > 1.0  # users differ in how much they click: impressions are correlated
    needed = [r["sessions_needed"][k] for k in sorted(r["sessions_needed"], key=float)]
    assert needed == sorted(needed, reverse=True)  # smaller lifts need more traffic
    prop = np.array(r["propensity"])
    assert prop[0] == 1.0 and prop[-3:].mean() < 0.5  # examination falls with position
    rel = r["relevance_by_grade"]
    assert rel["5"]["ipw"] > rel["5"]["naive"]  # the correction undoes the position discount
    assert r["click_precision"] > 0.5 and r["rows_logged"] > 0
