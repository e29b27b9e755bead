"""Notebook 10 in the smoke profile (a few small sample photos), its exercises' worked solutions checked."""

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture
def results(run_notebook, monkeypatch):
    monkeypatch.setenv("VS_SOLVE", "1")  # every exercise's worked solution must match the notebook's value
    return run_notebook("10_your_own_images")


def test_your_own_images_notebook(results):
    r = results
    assert r["profile"] == "smoke" and r["images"] >= 10
    assert r["first_sync"]["embedded"] == r["images"] and r["first_sync"]["skipped"] == 0
    assert r["resync"] == {"embedded": 0, "seconds": pytest.approx(r["resync"]["seconds"]), "saved": False}
    assert 281 <= r["chelsea_top"][0][0] <= 285  # the ImageNet head calls chelsea a cat
    # every search answers k paths relative to the folder, best first
    for s in r["search"]:
        scores = [h["score"] for h in s["results"]]
        assert scores == sorted(scores, reverse=True) and all(not h["path"].startswith("/") for h in s["results"])
    assert r["face_rank"] == 1  # the cat's face finds its photo first
    assert "outside the image" in r["bad_crop_message"]
    assert [c["crop area"] for c in r["crops"]] == [0.5, 0.25, 0.1, 0.05]
    names = {q["encoder"] for q in r["quality"]}
    assert names == {
        "Fashion-MNIST encoder",
        "photo (raw cosine)",
        "photo, centred",
        "photo, PCA-whitened",
        "photo adapted, centred",
    }
    for q in r["quality"]:
        assert 0 <= q["P@5"] <= 1 and 0 <= q["mAP@10"] <= 1 and q["P@1"] >= 0
    a = r["adapted"]
    assert a["steps"] > 0 and a["fingerprint"] != a["frozen_fingerprint"]
    # scikit-image's cat() is chelsea again: an exact duplicate group
    groups = r["duplicates"]["groups"]
    assert any(
        g["kind"] == "exact" and sorted(g["paths"]) == ["animals/cat.png", "animals/chelsea.png"] for g in groups
    )
