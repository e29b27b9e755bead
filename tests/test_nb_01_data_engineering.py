"""Notebook 01 in the smoke profile; its click-log figures recomputed in SQL on the same database."""

import sqlite3

import numpy as np
import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def results(run_notebook):
    return run_notebook("01_data_engineering")


@pytest.fixture(scope="module")
def by_position(notebook_env):
    """Impressions, clicks and same-tag impressions of the seed log per position, by SQL alone."""
    conn = sqlite3.connect(f"file:{notebook_env['VS_DB']}?mode=ro", uri=True)
    rows = conn.execute(
        """
        SELECT i.position, SUM(i.type = 'impression'), SUM(i.type = 'click'),
               SUM(i.type = 'impression' AND q.tags = d.tags), SUM(i.type = 'click' AND q.tags = d.tags)
        FROM interactions AS i
        JOIN images AS q ON q.id = i.query_image_id
        JOIN images AS d ON d.id = i.displayed_image_id
        WHERE i.source = 'seed-log'
        GROUP BY i.position ORDER BY i.position
        """
    ).fetchall()
    conn.close()
    return np.array(rows, dtype=np.float64)


def test_corpus_and_tables(results):
    assert results["n_train"] == 60000 and results["n_test"] == 10000
    assert results["class_counts_train"] == [6000] * 10
    assert results["counts"]["images"] >= 70000 and results["counts"]["users"] == 3000
    assert 0.015 < results["private_rate"] < 0.025 and 0.005 < results["flagged_rate"] < 0.015
    # every bad row the notebook tried was refused by a constraint
    assert results["bad_rows_tried"] > 0 and results["bad_rows_rejected"] == results["bad_rows_tried"]
    # the folder loader read the three photos and skipped only the corrupt file
    assert results["folder_loaded"] == ["astronaut.jpg", "holiday/camera.png", "holiday/cat.png"]
    assert results["folder_skipped"] == ["holiday/broken.png"]
    assert 0.4 < results["background_fraction"] < 0.6


def test_ctr_by_position_equals_sql(results, by_position):
    position, shown, clicked, same_shown, same_clicked = by_position.T
    assert position.tolist() == list(range(1, 11))
    np.testing.assert_allclose(results["ctr_by_position"], clicked / shown, atol=1e-4)
    assert results["first_over_last_position_ctr"] == pytest.approx(clicked[0] / shown[0] / (clicked[-1] / shown[-1]))
    # same class = same tags (each class has its own tag list); its CTR is far above the others'
    assert results["ctr_same_class"] == pytest.approx(same_clicked.sum() / same_shown.sum())
    other = (clicked.sum() - same_clicked.sum()) / (shown.sum() - same_shown.sum())
    assert results["ctr_other_class"] == pytest.approx(other)


def test_the_fall_with_position_is_position_bias_alone(results, by_position):
    _, shown, _, same_shown, same_clicked = by_position.T
    share = same_shown / shown
    np.testing.assert_allclose(results["same_class_share_by_position"], share, atol=1e-4)
    assert share.max() - share.min() < 0.03, "every slot is drawn from the same mixture"
    assert results["position_class_chi2_p"] > 0.01
    # the propensity curve: CTR relative to position 1, among same-class results only
    same_ctr = same_clicked / same_shown
    np.testing.assert_allclose(results["propensity_same_class"], same_ctr / same_ctr[0], atol=1e-4)
    # the seed log's users examine position p with probability p^-0.8 (vs_lib.synthetic)
    assert results["propensity_power_law_exponent"] == pytest.approx(-0.8, abs=0.1)
    assert abs(results["propensity_exponent_same_class"] - results["propensity_exponent_other_class"]) < 0.1
