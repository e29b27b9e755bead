"""Notebook 11 in the smoke profile: the walk-through reports what notebooks 00-10 measured in
the same session (recomputed here from their results), and says clearly when one has not run."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.notebooks

SOURCES = [
    "00_overview", "01_data_engineering", "02_feature_engineering", "03_embedding_model",
    "04_nearest_neighbour_search", "05_embedding_space", "06_offline_evaluation", "07_online_evaluation",
    "08_serving", "09_scaling", "10_your_own_images",
]  # fmt: skip


def test_the_walkthrough_reports_this_runs_figures(run_notebook):
    src = {name: run_notebook(name) for name in SOURCES}  # already run by their own tests: read from the cache
    w = run_notebook("11_interview_walkthrough")
    assert w["profile"] == "smoke" and set(w["sources"]) == set(SOURCES)
    r01, r03, r06, r07, r09 = (src[n] for n in ("01_data_engineering", "03_embedding_model", "06_offline_evaluation",
                                                "07_online_evaluation", "09_scaling"))  # fmt: skip
    assert w["requirements"]["images"] == r01["counts"]["images"]
    assert w["requirements"]["private_rate"] == r01["private_rate"]
    assert w["framing"]["pixels_P@1"] == src["00_overview"]["pixels_baseline"]["P@1"]
    best = max(r03["methods"], key=lambda m: r03["methods"][m]["MAP@R"])
    assert w["model"]["best"] == best and w["model"]["MAP@R"] == r03["methods"][best]["MAP@R"]
    assert w["training"]["sweep_dim_within_001"] == r03["sweep_dim_within_001"]
    best_map = r06["systems"][r06["best"]]["mAP@10"]
    assert w["offline"]["best"] == r06["best"] and w["offline"]["mAP@10_interval"] == [
        best_map["low"],
        best_map["high"],
    ]
    assert (w["online"]["ctr_a"], w["online"]["p_value"]) == (r07["ab"]["ctr_a"], r07["ab"]["p_value"])
    good = {e: b for e, b in r09["bytes_per_vector"].items() if r09["recall_by_encoding"][e] >= 0.95}
    assert w["scale"]["smallest_encoding_recall_095"] == min(good, key=good.get)
    assert w["serving"]["other_sees_private"] is False and w["serving"]["rank1_after_restart"] is True


def test_a_notebook_that_has_not_run_is_named(run_notebook, notebook_env, smoke_figures_dir, tmp_path, monkeypatch):
    import papermill as pm

    for name in SOURCES:
        run_notebook(name)
    figures = tmp_path / "figures"
    shutil.copytree(smoke_figures_dir, figures)
    shutil.rmtree(figures / "05_embedding_space")
    for key, value in {**notebook_env, "VS_FIGURES_DIR": str(figures)}.items():
        monkeypatch.setenv(key, value)
    from vs_lib import config

    with pytest.raises(pm.PapermillExecutionError, match="run notebook 05_embedding_space first"):
        pm.execute_notebook(
            str(config.ROOT / "notebooks" / "11_interview_walkthrough.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"PROFILE": "smoke"}, kernel_name="python3", cwd=str(config.ROOT / "notebooks"),
            progress_bar=False,
        )  # fmt: skip
