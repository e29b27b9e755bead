"""Bad input to an index: clear errors from the factory and the kinds, the base's shared
validation (same checks and wording for every backend, nothing half-added), and the order
in which the base validates and updates around a backend."""

from __future__ import annotations

import numpy as np
import pytest
from _index_cases import DIM

from vs_lib import index as vi
from vs_lib.index.base import BaseIndex

pytestmark = pytest.mark.usefixtures("one_faiss_thread")  # fixtures from conftest.py


def test_user_errors_are_clear(clustered):
    x, ids = clustered.x, clustered.ids
    with pytest.raises(ValueError, match=r"at least 64 training vectors"):
        vi.create(DIM, "ivf", nlist=64).add(x[:50], ids[:50])
    with pytest.raises(ValueError, match=r"at least 256 training vectors"):
        vi.create(DIM, "ivfpq", m=8).add(x[:100], ids[:100])
    with pytest.raises(ValueError, match=r"kind must be one of.*annoy.*scann"):
        vi.create(DIM, "no-such-kind")
    with pytest.raises(ValueError, match="unknown parameter"):
        vi.create(DIM, "hnsw", nprobe=3)
    with pytest.raises(ValueError, match="unknown parameter"):
        vi.create(DIM, "tree", nprobe=3)
    with pytest.raises(ValueError, match="tree algorithm"):
        vi.create(DIM, "tree", algorithm="r_tree")
    with pytest.raises(ValueError, match="L2-normalised"):
        vi.create(DIM, "tree").add(x[:5] * 3, ids[:5])
    with pytest.raises(ValueError, match="no search parameters"):
        vi.create(DIM, "tree").set_search_params(nprobe=2)
    with pytest.raises(ValueError, match="unknown search parameter"):
        vi.create(DIM, "flat").set_search_params(ef=2)
    with pytest.raises(ValueError, match="dim must be"):
        vi.create(0, "flat")


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "tree"])
def test_shared_validation_is_the_same_for_every_backend(kind, clustered):
    """The base's checks, with the base's wording, whatever the backend; nothing half-added."""
    x, q, ids = clustered.x, clustered.q, clustered.ids
    params = {"nlist": 4, "m": 8, "nbits": 4} if kind == "ivfpq" else {}
    index = vi.create(DIM, kind, **params).add(x[:300], ids[:300])
    cases = [
        (lambda: index.add(x[:5, :16], ids[300:305]), r"shape \(n, 32\)"),
        (lambda: index.search(np.zeros((2, 31), np.float32), 3), r"shape \(n, 32\)"),
        (lambda: index.add(np.where(np.arange(DIM) == 3, np.nan, x[300:305]), ids[300:305]), "NaN or infinite"),
        (lambda: index.add(x[300:305], ids[300:304]), "does not match"),
        (lambda: index.add(x[300:303], [1, 2, 1]), "duplicates"),
        (lambda: index.add(x[300:302], [-1, 2]), ">= 0"),
        (lambda: index.add(x[300:302], ids[:2]), "already in the index"),
        (lambda: index.remove([5]), "not in the index"),
        (lambda: index.search(q[:1], 0), "k must be"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert len(index) == 300 and (index.ids() == np.sort(ids[:300])).all()  # nothing half-added or removed


class RecordingIndex(BaseIndex):
    """A minimal backend: what it receives shows what the base checked and when it updates."""

    kind = "recording"

    def __init__(self, dim: int, refuse: bool = False):
        super().__init__(dim)
        self.params = {}
        self.refuse, self.calls = refuse, []

    def _add(self, x, ids):
        self.calls.append(("add", x.dtype, x.shape, ids.dtype))
        if self.refuse:
            raise RuntimeError("store unavailable")

    def _remove(self, ids):
        self.calls.append(("remove", ids.tolist()))

    def _search(self, q, k):  # the first stored id, then nothing
        self.calls.append(("search", k))
        ids = np.full((len(q), k), -1, np.int64)
        ids[:, 0] = self._ids[0]
        return np.ones((len(q), k), np.float32), ids

    def set_search_params(self, **params):
        return self

    def memory_bytes(self):
        return 0

    def _write_files(self, folder):
        return {}

    @classmethod
    def from_manifest(cls, path, manifest, options):
        return cls(manifest.dim)


def test_base_validates_before_the_backend_and_updates_after_it():
    idx = RecordingIndex(4)
    with pytest.raises(ValueError):
        idx.add(np.ones((2, 3)), [1, 2])
    assert idx.calls == []  # bad input never reaches the backend
    idx.add(np.ones((2, 4), np.float64), [7, 3])
    assert idx.calls == [("add", np.float32, (2, 4), np.int64)] and idx.ids().tolist() == [3, 7]
    scores, found = idx.search(np.ones(4), 5)  # one vector is one query; k capped at len = 2
    assert idx.calls[-1] == ("search", 2)
    assert found.tolist() == [[3, -1, -1, -1, -1]] and np.isneginf(scores[0, 1:]).all() and scores[0, 0] == 1
    assert idx.remove([7]) == 1 and idx.ids().tolist() == [3] and idx.calls[-1] == ("remove", [7])
    refusing = RecordingIndex(4, refuse=True)
    with pytest.raises(RuntimeError):
        refusing.add(np.ones((1, 4)), [1])
    assert len(refusing) == 0  # the backend refused: the base recorded nothing
