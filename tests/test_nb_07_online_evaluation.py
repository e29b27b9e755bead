import contextlib
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chi2_contingency

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
    # the log went into the notebook's own simulated-interactions database, not the platform's
    log_db = Path(notebook_env["VS_DATA_DIR"]) / "simulations" / f"{r['log_name']}.db"
    with contextlib.closing(sqlite3.connect(log_db)) as conn:
        log = pd.read_sql_query("SELECT * FROM interactions", conn)
    assert len(log) == r["rows_logged"] > 0 and (log.synthetic == 1).all()
    assert int((log.type == "click").sum()) == r["click_pairs"] > 0
    with contextlib.closing(sqlite3.connect(notebook_env["VS_DB"])) as conn:
        (in_platform,) = conn.execute("SELECT COUNT(*) FROM interactions WHERE source LIKE 'simulation:%'").fetchone()
        images = pd.read_sql_query("SELECT id, owner_id, is_private, is_flagged FROM images", conn).set_index("id")
    assert in_platform == 0
    # the one search path: no logged impression is another user's private image or a flagged one
    shown = log.join(images, on="displayed_image_id")
    assert shown.owner_id.notna().all()
    hidden = (shown.is_flagged == 1) | ((shown.is_private == 1) & (shown.owner_id != shown.user_id))
    assert not hidden.any() and r["hidden_images_shown"] == 0
    assert (log.query_image_id != log.displayed_image_id).all()
    # hundreds of A/A tests, and the Wilson interval of their rate recomputed with scipy's binomtest
    aa = r["aa"]
    assert aa["n"] >= 200
    ci = binomtest(aa["significant_z"], aa["n"]).proportion_ci(method="wilson")
    assert aa["false_positive_z"] == pytest.approx(aa["significant_z"] / aa["n"])
    assert aa["false_positive_z_ci"] == pytest.approx([ci.low, ci.high])
    # the user-level bootstrap is the honest one: its A/A rate is compatible with the level
    lo, hi = binomtest(aa["significant_bootstrap"], aa["n"]).proportion_ci(method="exact")
    assert lo <= 0.10 and hi >= 0.02, aa


def test_online_evaluation_markdown_states_no_measured_numbers():
    """Decimal numbers and percentages in the Markdown are inputs of the lesson, listed here."""
    allowed = {"2%", "60%", "0.5", "80%", "95%", "5 %", "80 %"}  # click-model inputs, test levels, exercise inputs
    found = markdown_numbers(Path(__file__).parents[1] / "notebooks" / "07_online_evaluation.ipynb")
    assert set(found) <= allowed, set(found) - allowed


NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?\s?%|(?<![\w.])\d+\.\d+(?![\w.])")


def markdown_numbers(path: Path) -> list[str]:
    """Decimal numbers and percentages in a notebook's Markdown cells, outside code spans."""
    cells = json.loads(path.read_text())["cells"]
    text = [re.sub(r"`[^`]*`", "", "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]
    return [m.group() for t in text for m in NUMBER.finditer(t)]
