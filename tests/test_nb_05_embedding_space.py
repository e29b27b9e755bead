import pytest

pytestmark = pytest.mark.notebooks


def test_embedding_space_notebook(run_notebook):
    r = run_notebook("05_embedding_space")
    assert r["n_points"] == 1000
    assert {"pixels", "untrained"} <= set(r["encoders"]) and len(r["encoders"]) >= 3
    for name in r["encoders"]:
        assert r["map_shapes"][name] == [1000, 2]
        s = r["space"][name]
        # Fashion-MNIST neighbourhoods are mostly same-class even in pixel space; maps are locally faithful
        assert 0.5 < s["10-NN class agreement"] <= 1.0
        assert -1 <= s["silhouette (cosine)"] <= 1
        assert 0.85 < s["trustworthiness (2-D map)"] <= 1.0
        # the known overlaps are among related garments, never trousers or bags
        assert all("Trouser" not in p and "Bag" not in p for p in r["top_overlaps"][name])
    assert r["best"] not in ("pixels", "untrained")
    assert r["zoom_points"] > 20 and r["zoom_classes"] >= 2
