"""Tree-based approximate search: Annoy's forest of random-projection trees (``kind="annoy"``).

``create(dim, "annoy", metric="ip", n_trees=100, search_k=-1)``.  Each tree splits the
vectors recursively by a hyperplane halfway between two sampled vectors until a leaf holds
only a few; a query descends every tree at once through one priority queue (the nodes
nearest their splitting plane first), gathers the items of the leaves it reaches until it has
inspected ``search_k`` nodes (``-1``: ``n_trees × k``), and ranks those candidates by exact
distance.  ``search_k`` trades query time for recall; ``n_trees`` buys recall at small
``search_k`` for build time and memory.  Unlike the exact kd-tree (``kind="tree"``), no
subtree is ever guaranteed empty of better points — which is why it stays fast in hundreds
of dimensions, where an exact tree ends up scanning nearly everything.

An Annoy forest is immutable: no vector can be added once it is built, none deleted.
Behind the ``VectorIndex`` interface:

- **add**: new vectors go to an exact buffer that every search scans too (the two candidate
  lists are merged by score), so they are found at once.  The forest is rebuilt from its own
  vectors plus the buffer at the next ``search`` or ``save`` once the buffer holds more than
  ``rebuild_fraction`` of the forest (and at least ``min_build`` vectors); ``build()`` forces
  it.  Below ``min_build`` vectors there is no forest and search is exact.  A buffer costs
  about its share of an exact scan per query, hence the small default fraction.
- **remove**: tombstones.  A search asks the forest for ``k`` + (removed) candidates, at most
  ``overfetch × k``, drops the removed ones and asks again for more if fewer than ``k``
  survive; the forest is rebuilt once removed rows exceed ``dead_fraction`` of it.
- **metric**: ``l2`` is Annoy's ``euclidean`` (scores: squared distances); ``ip`` is Annoy's
  ``angular`` on L2-normalised vectors (required), whose distance ``d = sqrt(2 - 2·cos)``
  gives the score ``|q|·(1 - d²/2)``, the inner product with the query ``q``.
- **persistence**: the forest file (Annoy memory-maps it: opening is O(1), its pages are
  shared between processes), the forest's row ids and tombstones and the buffer, each
  checksummed in the manifest; ``memory_bytes`` counts the forest exactly once it has been
  saved or loaded (the file size), by an estimate before.

A rebuild that a ``search`` starts runs under a lock and swaps the new forest in whole, so
concurrent searches see either the old or the new state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from .base import BaseIndex, check_params
from .errors import IndexCorruptedError
from .persistence import Manifest, OpenOptions, load_npy, write_checksummed, write_npy

DEFAULTS: dict[str, Any] = {
    "n_trees": 100,
    "search_k": -1,
    "rebuild_fraction": 0.03,
    "dead_fraction": 0.10,
    "min_build": 1000,
    "overfetch": 20,
    "seed": 1,
    "build_threads": -1,
}
SEARCH_PARAMS = ("search_k",)

__all__ = ["AnnoyIndex"]


@dataclass(frozen=True)
class _State:
    """What a search reads, replaced whole by a rebuild: the forest (``None`` before the
    first build), its rows' ids ``(f,)`` int64 and liveness ``(f,)`` bool, the buffer
    ``(b, dim)`` float32 with ids ``(b,)`` int64 and squared norms ``(b,)`` float32."""

    forest: Any
    row_ids: np.ndarray
    alive: np.ndarray
    dead: int
    buf_x: np.ndarray
    buf_ids: np.ndarray
    buf_sq: np.ndarray
    forest_bytes: int | None = None  # exact size of the forest file once saved or loaded


def _empty_state(dim: int) -> _State:
    none = np.empty(0, np.int64)
    return _State(None, none, np.empty(0, bool), 0, np.empty((0, dim), np.float32), none, np.empty(0, np.float32))


class AnnoyIndex(BaseIndex):
    """Annoy's random-projection forest + exact buffer + tombstones (see the module doc)."""

    kind = "annoy"

    def __init__(self, dim: int, metric: str = "ip", *, fingerprint: str | None = None, **params: Any):
        self.params: dict[str, Any] = check_params(self.kind, params, DEFAULTS)
        p = self.params
        if int(p["n_trees"]) < 1 or int(p["min_build"]) < 1 or int(p["overfetch"]) < 1:
            raise ValueError("annoy: n_trees, min_build and overfetch must be positive integers")
        if not (float(p["rebuild_fraction"]) > 0 and 0 < float(p["dead_fraction"]) < 1):
            raise ValueError("annoy: rebuild_fraction must be > 0 and dead_fraction in (0, 1)")
        super().__init__(dim, metric, fingerprint=fingerprint)
        self._state = _empty_state(self.dim)
        self._build_lock = threading.Lock()
        self.rebuilds = 0  # forests built so far (by this object)

    @property
    def forest(self) -> Any:
        """The ``annoy.AnnoyIndex`` underneath (``None`` before the first build); its item ``i``
        is the vector of id ``row_ids[i]``."""
        return self._state.forest

    @property
    def row_ids(self) -> np.ndarray:
        """The id of each forest row, ``(rows,)`` int64 (removed rows included until a rebuild)."""
        return self._state.row_ids

    # ------------------------------------------------------------------ add / remove
    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        if self.metric == "ip" and np.abs(np.linalg.norm(x, axis=1) - 1).max() > 1e-3:
            raise ValueError("the annoy index with metric='ip' needs L2-normalised embeddings (it ranks by angle)")
        s = self._state
        buf_x = np.concatenate([s.buf_x, x])
        sq = np.einsum("nd,nd->n", x, x).astype(np.float32)
        self._state = replace(
            s, buf_x=buf_x, buf_ids=np.concatenate([s.buf_ids, ids]), buf_sq=np.concatenate([s.buf_sq, sq])
        )

    def _remove(self, ids: np.ndarray) -> None:
        s = self._state
        in_buf = np.isin(s.buf_ids, ids)
        alive = s.alive & ~np.isin(s.row_ids, ids) if len(s.row_ids) else s.alive
        self._state = replace(
            s,
            alive=alive,
            dead=int(len(alive) - alive.sum()),
            buf_x=s.buf_x[~in_buf],
            buf_ids=s.buf_ids[~in_buf],
            buf_sq=s.buf_sq[~in_buf],
        )

    # ------------------------------------------------------------------ the forest
    def needs_build(self) -> bool:
        """Whether the next search or save rebuilds the forest (buffer or tombstones too many)."""
        s, p = self._state, self.params
        forest = len(s.row_ids)
        if s.forest is None:
            return len(s.buf_ids) >= int(p["min_build"])
        too_many_new = len(s.buf_ids) > max(int(p["min_build"]), float(p["rebuild_fraction"]) * forest)
        return too_many_new or s.dead > float(p["dead_fraction"]) * forest

    def build(self) -> Self:
        """Build the forest now from every stored vector (the live forest rows + the buffer)."""
        with self._build_lock:
            self._build()
        return self

    def _build(self) -> None:
        import annoy

        t0 = time.perf_counter()
        s, p = self._state, self.params
        rows = np.flatnonzero(s.alive)
        old = np.empty((len(rows), self.dim), np.float32)
        for j, r in enumerate(rows.tolist()):
            old[j] = s.forest.get_item_vector(r)
        x = np.concatenate([old, s.buf_x])
        row_ids = np.concatenate([s.row_ids[rows], s.buf_ids])
        state = _empty_state(self.dim)
        if len(row_ids):
            forest = annoy.AnnoyIndex(self.dim, "angular" if self.metric == "ip" else "euclidean")
            forest.set_seed(int(p["seed"]))
            for i, v in enumerate(x):
                forest.add_item(i, v)
            forest.build(int(p["n_trees"]), n_jobs=int(p["build_threads"]))
            state = replace(state, forest=forest, row_ids=row_ids, alive=np.ones(len(row_ids), bool))
        self._state = state  # one assignment: searches see the old or the new forest, whole
        self.rebuilds += 1
        self.build_seconds += time.perf_counter() - t0

    def _ensure_built(self) -> _State:
        if self.needs_build():
            with self._build_lock:
                if self.needs_build():  # another search may have rebuilt it meanwhile
                    self._build()
        return self._state

    # ------------------------------------------------------------------ search
    def set_search_params(self, **params: Any) -> Self:
        """``search_k``: nodes a query inspects (``-1``: ``n_trees × k``); more is slower and finds more."""
        unknown = set(params) - set(SEARCH_PARAMS)
        if unknown:
            raise ValueError(f"unknown search parameter(s) {sorted(unknown)}; expected some of {list(SEARCH_PARAMS)}")
        if params.get("search_k") is not None:
            search_k = int(params["search_k"])
            if search_k < 1 and search_k != -1:
                raise ValueError(f"search_k must be a positive integer or -1, got {search_k}")
            self.params["search_k"] = search_k
        return self

    def _forest_topk(self, s: _State, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best live forest rows for one query: ``(Annoy distances, rows)``."""
        n_forest, search_k = len(s.row_ids), int(self.params["search_k"])
        want = min(n_forest, k + s.dead, k * int(self.params["overfetch"])) if s.dead else min(n_forest, k)
        while True:
            rows_l, dist_l = s.forest.get_nns_by_vector(v, want, search_k, True)
            rows, dist = np.asarray(rows_l, np.int64), np.asarray(dist_l, np.float32)
            if s.dead:
                keep = s.alive[rows]
                rows, dist = rows[keep], dist[keep]
            # enough, or everything, or a fixed search_k that already ran out of candidates
            if len(rows) >= k or want >= n_forest or (search_k != -1 and len(rows_l) < want):
                return dist[:k], rows[:k]
            want = min(n_forest, 2 * want)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._ensure_built()
        n, ip = len(q), self.metric == "ip"
        scores = np.empty((n, k), np.float32)
        found = np.full((n, k), -1, np.int64)
        nb = len(s.buf_ids)
        if nb:  # exact scores against the buffer, all queries at once; its best k per query
            bs = q @ s.buf_x.T
            if not ip:
                bs = np.maximum(np.einsum("nd,nd->n", q, q)[:, None] - 2 * bs + s.buf_sq[None, :], 0)
            kb = min(k, nb)
            key = -bs if ip else bs
            top = np.argpartition(key, kb - 1, axis=1)[:, :kb] if kb < nb else np.tile(np.arange(nb), (n, 1))
            b_scores, b_ids = np.take_along_axis(bs, top, 1).astype(np.float32), s.buf_ids[top]
        norms = np.linalg.norm(q, axis=1) if ip else None
        for r in range(n):
            if s.forest is not None:
                dist, rows = self._forest_topk(s, q[r], k)
                # angular distance d = |q/|q| - x|: |q|·(1 - d²/2) = q·x, the buffer's score
                sc = norms[r] * (1.0 - dist * dist / 2.0) if norms is not None else dist * dist
                ids = s.row_ids[rows]
            else:
                sc, ids = np.empty(0, np.float32), np.empty(0, np.int64)
            if nb:
                sc, ids = np.concatenate([sc, b_scores[r]]), np.concatenate([ids, b_ids[r]])
                order = np.argsort(-sc if ip else sc, kind="stable")[:k]
                sc, ids = sc[order], ids[order]
            m = min(k, len(ids))
            scores[r, :m], found[r, :m] = sc[:m], ids[:m]
        return scores, found

    # ------------------------------------------------------------------ stored vectors, memory
    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """From the buffer, else from the forest (Annoy keeps every item's vector)."""
        s = self._state
        out = np.empty((len(ids), self.dim), np.float32)
        buf_pos = {int(i): j for j, i in enumerate(s.buf_ids.tolist())}
        live = np.flatnonzero(s.alive)
        order = np.argsort(s.row_ids[live])
        for j, image_id in enumerate(ids.tolist()):
            if image_id in buf_pos:
                out[j] = s.buf_x[buf_pos[image_id]]
            else:
                row = live[order[np.searchsorted(s.row_ids[live], image_id, sorter=order)]]
                out[j] = s.forest.get_item_vector(int(row))
        return out

    def memory_bytes(self) -> int:
        """The forest (items and split nodes), the row and buffer tables and the sorted ids.

        The forest is the file size once saved or loaded; before, an estimate: Annoy's node is
        ``dim`` floats plus a 12–16 B header, and a tree over ``n`` items has about
        ``3·n / (dim + 2)`` split nodes (a leaf holds up to ``dim + 2`` item ids)."""
        s = self._state
        forest = 0
        if s.forest is not None:
            forest = s.forest_bytes or int(
                (16 + 4 * self.dim) * (len(s.row_ids) + s.forest.get_n_trees() * 3 * len(s.row_ids) / (self.dim + 2))
            )
        tables = s.row_ids.nbytes + s.alive.nbytes + s.buf_x.nbytes + s.buf_ids.nbytes + s.buf_sq.nbytes
        return int(forest + tables + self._ids.nbytes)

    # ------------------------------------------------------------------ persistence
    def _versions(self) -> dict[str, str]:
        import importlib.metadata

        return {"annoy": importlib.metadata.version("annoy")}

    def _write_files(self, folder: Path) -> dict[str, dict[str, str]]:
        s = self._ensure_built()
        files: dict[str, dict[str, str]] = {}
        if s.forest is not None:
            # Annoy writes the file, then memory-maps it; the mapping follows the renames
            files["forest"] = write_checksummed(folder, "forest", ".annoy", lambda tmp: s.forest.save(str(tmp)))
            self._state = replace(s, forest_bytes=(folder / files["forest"]["name"]).stat().st_size)
        tables = {"rowids": s.row_ids, "alive": s.alive, "bufx": s.buf_x, "bufids": s.buf_ids}
        for role, arr in tables.items():
            files[role] = write_npy(folder, role, arr)
        return files

    @classmethod
    def from_manifest(cls, path: Path, manifest: Manifest, options: OpenOptions) -> Self:
        """The saved forest (memory-mapped), its tables and the buffer, checksums verified."""
        import annoy

        blobs = manifest.verified_files(path, required=("rowids", "alive", "bufx", "bufids"))
        self = cls(manifest.dim, manifest.metric, fingerprint=manifest.fingerprint, **manifest.params)
        row_ids = np.asarray(load_npy(blobs["rowids"]), np.int64)
        alive = np.asarray(load_npy(blobs["alive"]), bool)
        buf_x = np.asarray(load_npy(blobs["bufx"]), np.float32)
        buf_ids = np.asarray(load_npy(blobs["bufids"]), np.int64)
        if len(alive) != len(row_ids) or buf_x.shape != (len(buf_ids), self.dim):
            raise IndexCorruptedError(f"the annoy tables at {path} do not fit together")
        forest, nbytes = None, None
        if "forest" in blobs:
            forest = annoy.AnnoyIndex(self.dim, "angular" if self.metric == "ip" else "euclidean")
            try:
                forest.load(str(blobs["forest"]))
            except OSError as e:
                raise IndexCorruptedError(f"cannot read the annoy forest at {blobs['forest']}: {e}") from None
            if forest.get_n_items() != len(row_ids):
                raise IndexCorruptedError(f"the forest holds {forest.get_n_items()} items, its table {len(row_ids)}")
            nbytes = blobs["forest"].stat().st_size
        elif len(row_ids):
            raise IndexCorruptedError(f"{path / 'manifest.json'} names no forest file for {len(row_ids)} rows")
        sq = np.einsum("nd,nd->n", buf_x, buf_x).astype(np.float32)
        self._state = _State(forest, row_ids, alive, int(len(alive) - alive.sum()), buf_x, buf_ids, sq, nbytes)
        self._ids = np.sort(np.concatenate([row_ids[alive], buf_ids]))
        self._check_count(path, manifest)
        return self
