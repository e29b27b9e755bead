"""The Milvus backend (``kind="milvus"``) on Milvus Lite passes the interface tests of the
FAISS kinds: the functions of ``tests/test_index_*.py`` are run again with a Milvus case,
plus the checks that differ (persistence lives in the store, server URIs, serving needs)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import _index_cases as cases  # tests/ is on sys.path under pytest's default import mode
import test_index_persistence as t_persistence
import test_index_search as t_search
import test_index_sync as t_sync
import test_index_validation as t_validation

from vs_lib import index as vi
from vs_lib.index import IndexCorruptedError, IndexMismatchError
from vs_lib.index.milvus import MilvusIndex, default_uri

fashion_mnist = t_sync.fashion_mnist
DIM, N = cases.DIM, cases.N
SHARED_MODULES = (t_search, t_persistence, t_validation)
MILVUS_CASE = [("milvus", {}, 0.999)]  # FLAT in Milvus: exact


@pytest.fixture
def shared(monkeypatch, tmp_path):
    """The index interface tests (test_index_*.py) pointed at a Milvus case; Milvus Lite files under tmp_path."""
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    functions = {}
    for module in SHARED_MODULES:
        if hasattr(module, "CASES"):  # functions that loop over the kinds' cases see only Milvus
            monkeypatch.setattr(module, "CASES", MILVUS_CASE)
            monkeypatch.setattr(module, "IDS", ["milvus"])
        functions.update({name: getattr(module, name) for name in dir(module) if name.startswith("test_")})
    # their functions call index.create(DIM, "milvus"), which makes a MilvusIndex
    return types.SimpleNamespace(**functions)


@pytest.fixture
def built(shared, clustered):
    x, ids = clustered.x, clustered.ids
    idx = MilvusIndex(DIM, fingerprint="enc-1").add(x, ids)
    yield {"milvus": idx, "flat": idx}
    idx.drop()


# ---------------------------------------------------------------------- shared interface tests
def test_recall_against_exact(shared, built, clustered):
    shared.test_recall_against_exact(0, built, clustered)


def test_add_remove_search_consistency(shared, clustered):
    shared.test_add_remove_search_consistency(0, clustered)


def test_k_larger_than_index_and_empty_index(shared, clustered):
    shared.test_k_larger_than_index_and_empty_index(0, clustered)


def test_mismatched_dimension_or_fingerprint_refused(shared, built, tmp_path):
    shared.test_mismatched_dimension_or_fingerprint_refused(built, tmp_path)


def test_shared_validation_is_the_same_for_every_backend(shared, clustered):
    shared.test_shared_validation_is_the_same_for_every_backend("milvus", clustered)


def test_l2_metric_matches_numpy(shared, clustered):
    shared.test_l2_metric_matches_numpy("milvus", clustered)


# ---------------------------------------------------------------------- Milvus specifics
def test_factory_dispatches_to_milvus(shared, clustered, tmp_path):
    x, ids = clustered.x, clustered.ids
    idx = vi.create(DIM, "milvus", fingerprint="enc-1", index_type="FLAT")
    assert isinstance(idx, MilvusIndex) and isinstance(idx, vi.VectorIndex)
    assert idx.kind == "milvus" and idx.fingerprint == "enc-1"
    idx.add(x[:100], ids[:100]).save(tmp_path / "m")
    back = vi.load(tmp_path / "m", expected_dim=DIM, expected_fingerprint="enc-1")
    assert isinstance(back, MilvusIndex) and len(back) == 100
    with pytest.raises(IndexMismatchError):
        vi.load(tmp_path / "m", expected_fingerprint="enc-2")
    assert type(vi.create(DIM, "flat")) is vi.FaissIndex  # the FAISS kinds are untouched


def test_scores_are_inner_products_and_match_faiss(built, clustered):
    x, q, ids = clustered.x, clustered.q, clustered.ids
    scores, found = built["milvus"].search(q, 5)
    rows = (found - 1000) // 7
    np.testing.assert_allclose(scores, np.einsum("nd,nkd->nk", q, x[rows]), atol=1e-4)
    f_scores, f_found = vi.create(DIM, "flat").add(x, ids).search(q, 5)
    assert (found == f_found).mean() > 0.99  # ties aside, the same ranking as FAISS flat
    np.testing.assert_allclose(scores, f_scores, atol=1e-4)


def test_persistence_round_trip(built, clustered, tmp_path):
    x, q, ids = clustered.x, clustered.q, clustered.ids
    index = built["milvus"]
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == "milvus" and manifest["dim"] == DIM and manifest["metric"] == "ip"
    assert manifest["count"] == N and manifest["fingerprint"] == "enc-1"
    assert manifest["params"]["collection"] == index.collection and "pymilvus" in manifest["versions"]
    index.close()  # as a new process would: reopen from the manifest
    loaded = vi.load(tmp_path / "idx", expected_dim=DIM, expected_fingerprint="enc-1")
    assert len(loaded) == N and loaded.fingerprint == "enc-1"
    np.testing.assert_array_equal(loaded.ids(), np.sort(ids))
    s1, i1 = index.search(q, 10)
    s2, i2 = loaded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    # writes go to the store: an add after the save survives a reopen without a new save
    extra = np.array([10**9], np.int64)
    loaded.add(x[:1], extra)
    loaded.close()
    again = vi.load(tmp_path / "idx")
    assert len(again) == N + 1 and extra[0] in again
    np.testing.assert_allclose(again.reconstruct([ids[5], extra[0]]), x[[5, 0]], atol=1e-6)
    with pytest.raises(KeyError):
        again.reconstruct([123456789])


def test_missing_store_or_collection_refused(shared, clustered, tmp_path):
    x, ids = clustered.x, clustered.ids
    idx = MilvusIndex(DIM, fingerprint="e").add(x[:10], ids[:10])
    idx.save(tmp_path / "i")
    idx.drop()
    with pytest.raises(IndexCorruptedError, match="does not exist"):
        vi.load(tmp_path / "i")
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    manifest["params"]["uri"] = "no-such-file.db"
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptedError, match="missing"):
        vi.load(tmp_path / "i")
    with pytest.raises(FileNotFoundError):
        vi.load(tmp_path / "nothing")


def test_default_store_is_a_lite_file_under_data_dir(shared, tmp_path, clustered):
    x, ids = clustered.x, clustered.ids
    idx = MilvusIndex(DIM).add(x[:3], ids[:3])
    assert idx.uri == default_uri(idx.collection)
    assert idx.uri.startswith(str(tmp_path / "data" / "milvus"))
    assert (tmp_path / "data" / "milvus").exists()
    with pytest.raises(ValueError, match="already exists"):
        MilvusIndex(DIM, uri=idx.uri, collection=idx.collection)


def test_user_errors_are_clear(shared, clustered):
    x, q, ids = clustered.x, clustered.q, clustered.ids
    index = MilvusIndex(DIM)
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.add(x[:5, :16], ids[:5])
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        index.search(np.zeros((2, 31), np.float32), 3)
    bad = x[:5].copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(bad, ids[:5])
    with pytest.raises(ValueError, match="duplicates"):
        index.add(x[:3], [1, 2, 1])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(x[:2], [-1, 2])
    with pytest.raises(ValueError, match="k must be"):
        index.search(q[:1], 0)
    with pytest.raises(ValueError, match="metric"):
        MilvusIndex(DIM, metric="cosine")
    with pytest.raises(ValueError, match="collection must be"):
        MilvusIndex(DIM, collection="1-bad name")
    assert len(index) == 0  # nothing half-added


def test_hnsw_index_type_and_search_params(shared, clustered):
    x, q, ids, truth = clustered.x, clustered.q, clustered.ids, clustered.truth
    idx = MilvusIndex(
        DIM, index_type="HNSW", index_params={"M": 16, "efConstruction": 100}, search_params={"ef": 64}
    ).add(x, ids)
    assert vi.neighbour_recall(idx.search(q, 10)[1], truth) >= 0.9
    assert idx.memory_bytes() == N * (4 * DIM + 8 + 2 * 16 * 4)


def test_sync_index_runs_on_milvus(shared, tmp_path, monkeypatch, fashion_mnist):
    """The indexing pipeline (and so the serving layer, which calls it) on kind='milvus'."""
    conn = t_sync._platform(tmp_path, list(range(0, 200)) + list(range(60000, 60050)))
    enc = t_sync.FakeEncoder()
    path = vi.default_index_path(enc.name, "milvus")
    first = vi.sync_index(enc, conn, path, kind="milvus", progress=False)
    assert (first.added, first.total) == (250, 250)
    conn.execute("DELETE FROM images WHERE id IN (3, 60001)")
    conn.commit()
    second = vi.sync_index(enc, conn, path, kind="milvus", progress=False)
    assert (second.added, second.removed, second.total) == (0, 2, 248)
    idx = vi.load(path, expected_dim=enc.dim, expected_fingerprint=enc.fingerprint)
    assert isinstance(idx, MilvusIndex) and 3 not in idx and len(idx) == 248

    class Other(t_sync.FakeEncoder):
        fingerprint = "fake-0002"

    with pytest.raises(IndexMismatchError):
        vi.sync_index(Other(), conn, path, kind="milvus", progress=False)


def test_search_service_runs_on_milvus(tmp_path, monkeypatch, fashion_mnist):
    """The serving facade on kind='milvus' (what `serve --index-kind milvus` builds): search,
    then an upload that is searchable at once and survives a restart of the service."""
    import io

    from PIL import Image

    from vs_lib import serving, testing

    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path / "data"))
    paths = testing.build_small_platform(tmp_path / "platform", n_images=400, dim=32)
    ipath = tmp_path / "index" / "milvus"
    kwargs = dict(
        index_kind="milvus", db_path=paths["db"], index_path=ipath, store_dir=tmp_path / "objects", progress=False
    )
    svc = serving.SearchService.from_paths(paths["model"], **kwargs)
    assert isinstance(svc.neighbours.index, MilvusIndex) and len(svc.neighbours.index) == 400
    res = svc.search(image_id=7, k=5)
    assert 0 < len(res.ids) <= 5 and 7 not in res.ids
    buf = io.BytesIO()
    Image.fromarray(fashion_mnist.train_images[1000]).save(buf, format="PNG")
    up = svc.upload(buf.getvalue(), owner_id=1)
    assert up.image_id in svc.neighbours.index
    svc.neighbours.index.close()
    again = serving.SearchService.from_paths(paths["model"], **kwargs)
    assert up.image_id in again.neighbours.index and len(again.neighbours.index) == 401
