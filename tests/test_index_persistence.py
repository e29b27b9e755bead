"""Saving and loading indexes: round trips of every kind, memory-mapped vectors, mismatched
dimension or encoder, corrupted files, interrupted saves, and the factory's dispatch on kind
and on the manifest."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from _index_cases import CASES, DIM, IDS, N

from vs_lib import config
from vs_lib import index as vi
from vs_lib.index import IndexCorruptedError, IndexMismatchError

pytestmark = pytest.mark.usefixtures("one_faiss_thread")  # fixtures from conftest.py


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_persistence_round_trip(case, built, clustered, tmp_path):
    q, ids = clustered.q, clustered.ids
    index = built[IDS[case]]
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == CASES[case][0] and manifest["dim"] == DIM and manifest["metric"] == "ip"
    assert manifest["count"] == N and manifest["fingerprint"] == "enc-1"
    library = {"tree": "scikit-learn", "annoy": "annoy", "scann": "scann"}.get(CASES[case][0], "faiss")
    assert library in manifest["versions"] and all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    loaded = vi.load(tmp_path / "idx", expected_dim=DIM, expected_fingerprint="enc-1")
    assert type(loaded) is type(index) and loaded.kind == index.kind and loaded.fingerprint == "enc-1"
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    s1, i1 = index.search(q, 10)
    s2, i2 = loaded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    # a loaded index keeps accepting updates
    loaded.remove(ids[:10])
    assert len(loaded) == N - 10


def test_mmap_vectors_are_not_counted_in_memory(built, tmp_path):
    index = built[IDS[3]]  # ivfpq with rerank
    index.save(tmp_path / "pq")
    ram = vi.load(tmp_path / "pq")
    mm = vi.load(tmp_path / "pq", mmap_vectors=True)
    assert ram.memory_bytes() - mm.memory_bytes() == N * DIM * 4
    probe = np.eye(DIM, dtype=np.float32)
    np.testing.assert_array_equal(ram.search(probe, 5)[1], mm.search(probe, 5)[1])


def test_memory_reflects_compression(built):
    flat = built["flat"].memory_bytes() / N
    pq = built[IDS[2]].memory_bytes() / N
    assert DIM * 4 <= flat < DIM * 4 + 64  # floats + id bookkeeping
    assert pq < flat / 4  # 8-byte codes + 8-byte ids + centroids


def test_mismatched_dimension_or_fingerprint_refused(built, tmp_path):
    built["flat"].save(tmp_path / "i")
    with pytest.raises(IndexMismatchError, match="dimension 32"):
        vi.load(tmp_path / "i", expected_dim=64)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        vi.load(tmp_path / "i", expected_fingerprint="enc-2")
    with pytest.raises(FileNotFoundError):
        vi.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("name", ["flat", IDS[3], "tree"])
def test_corrupted_file_refused(name, built, tmp_path):
    built[name].save(tmp_path / "i")
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    for info in manifest["files"].values():
        f = tmp_path / "i" / info["name"]
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
        with pytest.raises(IndexCorruptedError, match="checksum"):
            vi.load(tmp_path / "i")
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    vi.load(tmp_path / "i")  # restored bytes load again
    (tmp_path / "i" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError):
        vi.load(tmp_path / "i")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "tree"])
def test_interrupted_save_leaves_previous_index(kind, clustered, tmp_path, monkeypatch):
    x, ids = clustered.x, clustered.ids
    index = vi.create(DIM, kind).add(x[:500], ids[:500])
    index.save(tmp_path / "i")
    index.add(x[500:800], ids[500:800])

    # killed after the new data files are written, before the manifest is replaced
    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(config, "write_json_atomic", boom)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "i")
    monkeypatch.undo()
    old = vi.load(tmp_path / "i")
    assert len(old) == 500 and set(old.ids()) == set(ids[:500])

    # killed while a data file is being written
    real_save = np.save

    def half_write(f, arr, **kw):
        real_save(f, arr[: len(arr) // 2], **kw)
        raise KeyboardInterrupt("killed mid-write")

    real_write = faiss.write_index

    def half_write_faiss(idx, fname):
        real_write(idx, fname)
        with open(fname, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(np, "save", half_write)
    monkeypatch.setattr(faiss, "write_index", half_write_faiss)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "i")
    monkeypatch.undo()
    assert len(vi.load(tmp_path / "i")) == 500

    # a completed save replaces it and cleans up the orphaned data files
    index.save(tmp_path / "i")
    assert len(vi.load(tmp_path / "i")) == 800
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    data_files = {f.name for f in (tmp_path / "i").iterdir() if f.name != "manifest.json"}
    assert data_files == {info["name"] for info in manifest["files"].values()}


def test_factory_dispatches_on_kind_and_on_the_manifest(clustered, tmp_path):
    x, ids = clustered.x, clustered.ids
    made = {kind: vi.create(DIM, kind) for kind in ("flat", "hnsw", "lsh", "tree", "annoy", "scann", "IVF8,Flat")}
    assert {k: type(v).__name__ for k, v in made.items()} == {
        "flat": "FaissIndex", "hnsw": "FaissIndex", "lsh": "FaissIndex", "tree": "TreeIndex",
        "annoy": "AnnoyIndex", "scann": "ScannIndex", "IVF8,Flat": "FaissIndex"
    }  # fmt: skip
    assert all(isinstance(v, vi.VectorIndex) and v.kind == k for k, v in made.items())
    for kind in ("flat", "tree", "annoy", "scann"):
        made[kind].add(x[:50], ids[:50]).save(tmp_path / kind)
        assert type(vi.load(tmp_path / kind)) is type(made[kind])
    # the manifest's kind picks the backend: a flat index's files claimed by the tree backend
    manifest = json.loads((tmp_path / "flat" / "manifest.json").read_text())
    (tmp_path / "flat" / "manifest.json").write_text(json.dumps({**manifest, "kind": "tree"}))
    with pytest.raises(IndexCorruptedError, match="names no ids or vectors"):
        vi.load(tmp_path / "flat")
