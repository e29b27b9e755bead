import numpy as np
import pytest
from _reference import pixel_embeddings

pytestmark = pytest.mark.notebooks


def test_embedding_space_notebook(run_notebook, umap_compiled):
    r = run_notebook("05_embedding_space")
    from sklearn.neighbors import NearestNeighbors

    from vs_lib import data

    n = r["n_points"]
    space = r["space"]
    assert {"pixels", "untrained"} <= set(space) and len(space) >= 3
    # the pixel space's 10-NN class agreement, recomputed with scikit-learn on the notebook's sample
    ds = data.load_fashion_mnist()
    sample = np.sort(np.random.default_rng(0).choice(len(ds.test_images), n, replace=False))
    labels = ds.test_labels[sample]
    nn = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(
        pixel_embeddings(ds.test_images[sample])
    )
    idx = nn.kneighbors(return_distance=False)[:, :10]  # without the point itself
    agreement = (labels[idx] == labels[:, None]).mean()
    assert space["pixels"]["10-NN class agreement"] == pytest.approx(agreement, abs=0.005)
    for name, s in space.items():
        assert r["map_shapes"][name] == [n, 2]
        # 2-D maps are locally faithful to the space they picture
        assert 0.85 < s["trustworthiness (2-D map)"] <= 1.0, name
        # the known overlaps are among related garments, never trousers or bags
        assert all("Trouser" not in p and "Bag" not in p for p in r["top_overlaps"][name]), name
    # training makes the space: the best trained encoder's neighbourhoods are purer than the pixels'
    # and than random weights', and its classes separate better (silhouette)
    best = space[r["best"]]
    for baseline in ("pixels", "untrained"):
        assert best["10-NN class agreement"] > space[baseline]["10-NN class agreement"], baseline
    assert best["silhouette (cosine)"] > space["untrained"]["silhouette (cosine)"]
    assert r["zoom_points"] > 20 and r["zoom_classes"] >= 2
