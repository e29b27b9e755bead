import pytest

pytestmark = pytest.mark.notebooks


def test_data_engineering_notebook(run_notebook):
    r = run_notebook("01_data_engineering")
    assert r["n_train"] == 60000 and r["n_test"] == 10000
    assert r["class_counts_train"] == [6000] * 10
    assert r["counts"]["images"] >= 70000 and r["counts"]["users"] == 3000
    assert 0.015 < r["private_rate"] < 0.025 and 0.005 < r["flagged_rate"] < 0.015
    # every bad row the notebook tried was refused by a constraint
    assert r["bad_rows_tried"] > 0 and r["bad_rows_rejected"] == r["bad_rows_tried"]
    # the folder loader read the three photos and skipped only the corrupt file
    assert r["folder_loaded"] == ["astronaut.jpg", "holiday/camera.png", "holiday/cat.png"]
    assert r["folder_skipped"] == ["holiday/broken.png"]
    ctr = r["ctr_by_position"]
    assert len(ctr) == 10 and ctr[0] > 2 * ctr[-1], "the seed log shows position bias"
    assert r["first_over_last_position_ctr"] == pytest.approx(ctr[0] / ctr[-1], rel=1e-2)
    assert r["ctr_same_class"] > 2 * r["ctr_other_class"]
    assert 0.4 < r["background_fraction"] < 0.6
