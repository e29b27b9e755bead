"""Notebook 00 in the smoke profile, its figures checked against independent computations."""

from itertools import pairwise

import numpy as np
import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def results(run_notebook):
    return run_notebook("00_overview")


def test_pixels_baseline_matches_scikit_learn_on_the_course_protocol(results):
    """The baseline is the course's "pixels" figure: z-scored pixels, cosine, the profile's split.

    Recomputed with scikit-learn's brute-force cosine neighbours on the same split, with the
    z-score statistics taken by NumPy from the training images.
    """
    from sklearn.neighbors import NearestNeighbors

    from vs_lib import data, evaluate

    ds = data.load_fashion_mnist()
    proto = evaluate.profile_protocol("smoke", ds, seed=0)
    train = ds.train_images.astype(np.float64) / 255.0
    mean, std = train.mean(), train.std()

    def z(images):
        return ((images.reshape(len(images), -1) / 255.0) - mean) / std

    nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(z(proto.gallery_images))
    _, found = nn.kneighbors(z(proto.query_images))
    hits = proto.gallery_labels[found] == proto.query_labels[:, None]
    b = results["pixels_baseline"]
    assert (b["n_queries"], b["n_gallery"]) == (len(proto.query_ids), len(proto.gallery_ids))
    # one query of 500 is 0.002: allow a couple of near-ties to fall the other way
    assert b["P@1"] == pytest.approx(hits[:, 0].mean(), abs=0.005)
    assert b["P@10"] == pytest.approx(hits.mean(), abs=0.003)
    assert results["raw_pixels_precision_at_1"] == b["P@1"]
    # per-class ranking: shirts are the hardest class for pixels, trousers among the easiest
    per_class = np.array([hits[proto.query_labels == c].mean() for c in range(10)])
    assert ds.class_names[int(per_class.argmin())] in b["worst_classes"]


def test_gaussian_concentration_against_an_independent_sample(results):
    """Nearest/farthest ratio on i.i.d. Gaussian points, recomputed with an independent seed."""
    from scipy.spatial.distance import cdist

    dims = results["concentration_dims"]
    eu, co = results["gaussian_nearest_over_farthest"]["euclidean"], results["gaussian_nearest_over_farthest"]["cosine"]
    assert all(a < b for a, b in pairwise(eu)) and all(a < b for a, b in pairwise(co))
    rng = np.random.default_rng(12345)
    for d, e, c in zip(dims, eu, co, strict=True):
        if d < 128:  # low dimensions: the ratio is a noisy mean of near-zero minima
            continue
        points, probes = rng.standard_normal((1000, d)), rng.standard_normal((100, d))
        de, dc = cdist(probes, points), cdist(probes, points, "cosine")
        assert e == pytest.approx(np.mean(de.min(1) / de.max(1)), abs=0.02), d
        assert c == pytest.approx(np.mean(dc.min(1) / dc.max(1)), abs=0.03), d
    assert co[-1] > 0.8, "cosine concentrates on i.i.d. data just as Euclidean distance does"


def test_real_images_concentrate_less_than_noise_of_the_same_dimension(results):
    real, shuffled = (results["real_vs_shuffled"][k] for k in ("Fashion-MNIST images", "same pixels, columns shuffled"))
    assert real["ambient dimension"] == shuffled["ambient dimension"] == 784
    assert real["nearest / farthest (Euclidean)"] + 0.3 < shuffled["nearest / farthest (Euclidean)"]
    assert real["nearest / farthest (cosine)"] + 0.3 < shuffled["nearest / farthest (cosine)"]
    assert 20 < results["real_components_90"] < results["shuffled_components_90"] / 3


def test_normalised_euclidean_equals_cosine_and_exposure_breaks_the_dot_product(results):
    assert results["l2_cosine_same_rankings"] == 1.0
    assert results["l2_cosine_identity_max_error"] < 1e-5
    table = results["exposure_retrieval"]

    def p10(condition, similarity):
        return table[f"{condition} | {similarity}"]["P@10"]

    # cosine is invariant to a positive factor per image (equal up to ties)
    assert p10("random exposure", "cosine similarity") == pytest.approx(
        p10("as photographed", "cosine similarity"), abs=0.01
    )
    assert p10("random exposure", "Euclidean distance") < p10("as photographed", "Euclidean distance")
    for condition in ("as photographed", "random exposure"):
        assert p10(condition, "raw dot product") < p10(condition, "cosine similarity") - 0.2
