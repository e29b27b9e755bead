"""A vector store that scales out: Milvus behind the ``VectorIndex`` interface (``kind="milvus"``).

The same client code (``pymilvus.MilvusClient``) talks to

- **Milvus Lite** (default): an embedded database in one local file,
  ``config.data_dir()/"milvus"/<collection>.db``, running inside this Python process —
  nothing to install or start;
- a **Milvus server or cluster**: pass ``uri="http://host:19530"`` (and ``token=`` if the
  server wants one).  A cluster shards a collection over data nodes, replicates segments
  over query nodes and builds indexes in the background; the calls below do not change.

``MilvusIndex(dim, metric="ip", *, fingerprint=None, uri=None, collection=None,
index_type="FLAT", index_params=None, search_params=None)`` behaves like
:class:`vs_lib.index.VectorIndex`:

- ``add(embeddings (n, dim) float32, ids (n,) int64 >= 0 unique)``, refused (nothing
  written) when an id is already stored; ``remove(ids) -> int`` refused when an id is
  missing;
- ``search(queries, k) -> (scores (n, k) float32, ids (n, k) int64)``, best first;
  ``metric="ip"``: inner products (cosine on L2-normalised vectors), ``"l2"``: squared
  Euclidean distances; missing results padded with id ``-1`` and score ``-inf`` / ``+inf``;
- ``save(path)`` writes ``path/manifest.json`` (kind ``"milvus"``, dim, metric, count,
  fingerprint, the store's ``uri`` and ``collection``); the vectors themselves are already
  durable in Milvus, which is the point of a database.  ``MilvusIndex.load(path,
  expected_dim=, expected_fingerprint=)`` refuses another encoder's index with
  :class:`~vs_lib.index.IndexMismatchError` and a missing collection with
  :class:`~vs_lib.index.IndexCorruptedError`;
- ``len``, ``ids()`` (sorted), ``in``, ``memory_bytes()`` (an estimate, see there),
  ``reconstruct(ids)`` (stored vectors, used by the serving layer's near-duplicate check).

Milvus index types: ``"FLAT"`` (exact, the default, like ``kind="flat"``), ``"IVF_FLAT"``
(``index_params={"nlist": 128}``, ``search_params={"nprobe": 16}``), ``"HNSW"``
(``{"M": 16, "efConstruction": 200}``, ``{"ef": 64}``), ``"IVF_PQ"``, ``"AUTOINDEX"``.

Differences from the FAISS kinds, on purpose: writes go straight to the store (an ``add``
without a ``save`` is not lost, and another process attached to the same server sees it);
on ``load`` the ids come from the store, so ``sync_index`` reconciles the store with the
``images`` table even if the manifest is older.  A Milvus Lite file can be opened by one
process at a time.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, config
from .index import MANIFEST, IndexCorruptedError, IndexMismatchError, VectorIndex

__all__ = ["MilvusIndex", "default_uri", "drop_collection", "milvus_available"]

KIND = "milvus"
ID_FIELD = "id"
VECTOR_FIELD = "embedding"
MAX_TOPK = 16_384  # Milvus' limit on k
_INSERT_BATCH = 4_096
_QUERY_BATCH = 1_024
_METRICS = {"ip": "IP", "l2": "L2"}
_CLIENTS: dict[tuple[str, str | None], Any] = {}


def milvus_available() -> bool:
    """True when ``pymilvus`` (and, for local files, ``milvus-lite``) can be imported."""
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


def default_uri(collection: str) -> str:
    """The Milvus Lite file of ``collection``: ``config.data_dir()/"milvus"/<collection>.db``."""
    return str(config.data_dir() / "milvus" / f"{collection}.db")


def _is_local(uri: str) -> bool:
    return not re.match(r"^[a-z]+://", uri)


def _client(uri: str, token: str | None = None):
    """One ``MilvusClient`` per (uri, token) in this process (Milvus Lite opens a file once)."""
    from pymilvus import MilvusClient

    key = (uri, token)
    client = _CLIENTS.get(key)
    if client is None:
        if _is_local(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"token": token} if token else {}
        client = MilvusClient(uri, **kwargs)
        _CLIENTS[key] = client
    return client


class MilvusIndex:
    """``VectorIndex``-compatible index stored in a Milvus collection (see module doc)."""

    kind = KIND

    # the same validation (shapes, NaN, id rules, messages) as the FAISS kinds
    _check_vectors = VectorIndex._check_vectors
    _check_ids = VectorIndex._check_ids
    _check_new = VectorIndex._check_new
    _check_present = VectorIndex._check_present

    def __init__(
        self,
        dim: int,
        kind: str = KIND,
        metric: str = "ip",
        *,
        fingerprint: str | None = None,
        uri: str | os.PathLike | None = None,
        collection: str | None = None,
        token: str | None = None,
        index_type: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        _create: bool = True,
    ):
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if kind != KIND:
            raise ValueError(f"MilvusIndex is kind {KIND!r}, got {kind!r}")
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {tuple(_METRICS)}, got {metric!r}")
        if collection is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", collection):
            raise ValueError(f"collection must be a Milvus name (letters, digits, _; not starting with a digit), got {collection!r}")
        self.dim = int(dim)
        self.metric = metric
        self.fingerprint = fingerprint
        self.collection = collection or f"vs_{uuid.uuid4().hex[:12]}"
        self.uri = str(uri) if uri is not None else default_uri(self.collection)
        self._token = token
        self.params: dict[str, Any] = {
            "uri": self.uri,
            "collection": self.collection,
            "index_type": str(index_type).upper(),
            "index_params": dict(index_params or {}),
            "search_params": dict(search_params or {}),
        }
        self.build_seconds = 0.0
        self._ids = np.empty(0, np.int64)
        if _create:
            self._create_collection()

    # ------------------------------------------------------------------ the store
    @property
    def client(self):
        return _client(self.uri, self._token)

    def _create_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self.client
        if c.has_collection(self.collection):
            raise ValueError(
                f"Milvus collection {self.collection!r} already exists at {self.uri}; "
                f"open it with MilvusIndex.load(<index dir>) or choose another collection name"
            )
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        ip = c.prepare_index_params()
        ip.add_index(field_name=VECTOR_FIELD, index_type=self.params["index_type"],
                     metric_type=_METRICS[self.metric], params=self.params["index_params"])
        try:
            c.create_collection(self.collection, schema=schema, index_params=ip, consistency_level="Strong")
        except Exception as e:  # pymilvus raises MilvusException for bad index types / params
            raise ValueError(f"Milvus refused the collection ({self.params['index_type']}, "
                             f"{self.params['index_params']}): {e}") from None

    def drop(self) -> None:
        """Delete the collection from the store (the index is then empty and unusable)."""
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)
        self._ids = np.empty(0, np.int64)

    def close(self) -> None:
        """Close this process's client for the store (reopened on next use)."""
        client = _CLIENTS.pop((self.uri, self._token), None)
        if client is not None:
            client.close()

    def flush(self) -> None:
        """Seal growing segments to disk (Milvus does it by itself too)."""
        try:
            self.client.flush(self.collection)
        except Exception:  # Milvus Lite versions without flush: writes are already durable
            pass

    # ------------------------------------------------------------------ VectorIndex API
    @property
    def is_trained(self) -> bool:
        return True  # Milvus trains IVF/PQ indexes itself when it builds a sealed segment

    def min_training_vectors(self, nlist: int | None = None) -> int:
        return 0

    def train(self, embeddings) -> "MilvusIndex":
        self._check_vectors(embeddings, "training embeddings")
        return self

    def add(self, embeddings, ids) -> "MilvusIndex":
        """Insert ``(n, dim)`` float32 embeddings under unique int64 ``ids`` not yet stored."""
        x, ids = self._check_new(embeddings, ids)
        if len(x) == 0:
            return self
        t0 = time.perf_counter()
        done = 0
        try:
            for s in range(0, len(x), _INSERT_BATCH):
                rows = [{ID_FIELD: int(i), VECTOR_FIELD: v} for i, v in zip(ids[s:s + _INSERT_BATCH], x[s:s + _INSERT_BATCH])]
                self.client.insert(self.collection, rows)
                done = s + len(rows)
        except BaseException:
            if done:  # all or nothing: take back the batches already written
                self.client.delete(self.collection, ids=ids[:done].tolist())
            raise
        if len(x) >= _INSERT_BATCH:
            self.flush()  # seal the segment: searches then use its index, not a slow scan of a growing segment
        self._ids = np.sort(np.concatenate([self._ids, ids]))
        self.build_seconds += time.perf_counter() - t0
        return self

    def remove(self, ids) -> int:
        """Delete ``ids`` (all must be stored) and return how many were removed."""
        ids = self._check_present(ids)
        if ids.size == 0:
            return 0
        for s in range(0, len(ids), _INSERT_BATCH):
            self.client.delete(self.collection, ids=ids[s:s + _INSERT_BATCH].tolist())
        self._ids = self._ids[~np.isin(self._ids, ids, assume_unique=True)]
        return int(len(ids))

    def set_search_params(self, **params: Any) -> "MilvusIndex":
        """Query-time knobs passed to Milvus (``nprobe`` for IVF, ``ef`` for HNSW)."""
        self.params["search_params"].update(params)
        return self

    def _pad_value(self) -> float:
        return -np.inf if self.metric == "ip" else np.inf

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query: ``(scores (n, k) float32, ids (n, k) int64)``."""
        q = self._check_vectors(queries, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > MAX_TOPK:
            raise ValueError(f"k must be at most {MAX_TOPK} for Milvus, got {k}")
        n = len(q)
        scores = np.full((n, k), self._pad_value(), np.float32)
        out = np.full((n, k), -1, np.int64)
        kk = min(int(k), len(self._ids))
        if kk == 0 or n == 0:
            return scores, out
        sp = {"metric_type": _METRICS[self.metric], "params": dict(self.params["search_params"])}
        for s in range(0, n, _QUERY_BATCH):
            res = self.client.search(self.collection, data=[row for row in q[s:s + _QUERY_BATCH]], limit=kk,
                                     output_fields=[ID_FIELD], search_params=sp, anns_field=VECTOR_FIELD)
            for r, hits in enumerate(res):
                m = len(hits)
                if m:
                    out[s + r, :m] = [h["id"] for h in hits]
                    scores[s + r, :m] = [h["distance"] for h in hits]
        return scores, out

    def reconstruct(self, ids) -> np.ndarray:
        """Stored vectors of ``ids``, ``(n, dim)`` float32 in the order given (``KeyError`` if absent)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        out = np.empty((len(ids), self.dim), np.float32)
        if len(ids) == 0:
            return out
        found: dict[int, Any] = {}
        uniq = np.unique(ids)
        for s in range(0, len(uniq), _QUERY_BATCH):
            for row in self.client.get(self.collection, ids=uniq[s:s + _QUERY_BATCH].tolist(), output_fields=[VECTOR_FIELD]):
                found[int(row[ID_FIELD])] = row[VECTOR_FIELD]
        for j, i in enumerate(ids.tolist()):
            if i not in found:
                raise KeyError(f"id {i} is not in the index")
            out[j] = np.asarray(found[i], np.float32)
        return out

    def __len__(self) -> int:
        return int(len(self._ids))

    def ids(self) -> np.ndarray:
        """The stored ids, sorted ascending, ``(len,)`` int64 (a copy)."""
        return self._ids.copy()

    def __contains__(self, image_id) -> bool:
        i = np.searchsorted(self._ids, image_id)
        return bool(i < len(self._ids) and self._ids[i] == image_id)

    def __repr__(self) -> str:
        return (f"MilvusIndex(dim={self.dim}, metric={self.metric!r}, n={len(self)}, uri={self.uri!r}, "
                f"collection={self.collection!r}, index_type={self.params['index_type']!r})")

    def memory_bytes(self) -> int:
        """Estimated bytes of the loaded collection: float32 vectors + int64 primary keys
        (``n · (4·dim + 8)``), plus the HNSW graph (``n · M · 2 · 4``) or, for IVF_PQ, the codes
        instead of the floats.  Milvus keeps them in its own memory (inside this process for
        Milvus Lite, on query nodes for a cluster), so this is computed, not read from FAISS."""
        n, d = len(self), self.dim
        kind, p = self.params["index_type"], self.params["index_params"]
        per = 4 * d + 8
        if kind == "HNSW":
            per += 2 * int(p.get("M", 16)) * 4
        elif kind == "IVF_PQ":
            per = int(p.get("m", d // 2)) * int(p.get("nbits", 8)) // 8 + 8
        return int(n * per)

    # ------------------------------------------------------------------ persistence
    def _relative_uri(self, path: Path) -> str:
        """Local files inside the index folder are recorded relative to it (movable)."""
        if _is_local(self.uri):
            try:
                return os.path.relpath(Path(self.uri).resolve(), path.resolve())
            except ValueError:  # another drive
                return str(Path(self.uri).resolve())
        return self.uri

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/manifest.json`` naming the store and collection (the vectors are in Milvus)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"index path {path} exists and is not a directory (an index is saved as a directory)")
        path.mkdir(parents=True, exist_ok=True)
        self.flush()
        import pymilvus

        params = {**self.params, "uri": self._relative_uri(path) if _is_local(self.uri) else self.uri}
        manifest = {
            "format_version": 1,
            "kind": KIND,
            "dim": self.dim,
            "metric": self.metric,
            "count": len(self),
            "fingerprint": self.fingerprint,
            "params": params,
            "uri_is_local": _is_local(self.uri),
            "trained": True,
            "files": {},
            "versions": {"vs_lib": __version__, "numpy": np.__version__, "pymilvus": pymilvus.__version__},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        config.write_json_atomic(path / MANIFEST, manifest)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expected_dim: int | None = None, expected_fingerprint: str | None = None,
             *, token: str | None = None, **_ignored: Any) -> "MilvusIndex":
        """Open the collection named by ``path/manifest.json``, checking dimension and encoder."""
        path = Path(path)
        m = VectorIndex.read_manifest(path)
        if m["kind"] != KIND:
            raise ValueError(f"index at {path} is of kind {m['kind']!r}, not {KIND!r}; use VectorIndex.load")
        if expected_dim is not None and int(m["dim"]) != int(expected_dim):
            raise IndexMismatchError(
                f"index at {path} has dimension {m['dim']}, but the encoder in use produces {expected_dim}; rebuild the index"
            )
        if expected_fingerprint is not None and m.get("fingerprint") != expected_fingerprint:
            raise IndexMismatchError(
                f"index at {path} was built with encoder fingerprint {m.get('fingerprint')!r}, "
                f"not {expected_fingerprint!r} (the encoder in use); rebuild the index"
            )
        p = dict(m.get("params") or {})
        uri = p.get("uri")
        if not uri or not p.get("collection"):
            raise IndexCorruptedError(f"{path / MANIFEST} names no Milvus uri/collection")
        if m.get("uri_is_local", _is_local(uri)) and not os.path.isabs(uri):
            uri = str((path / uri).resolve())
        if m.get("uri_is_local", _is_local(uri)) and not Path(uri).exists():
            raise IndexCorruptedError(f"the Milvus Lite file {uri} named by {path / MANIFEST} is missing")
        self = cls(int(m["dim"]), KIND, m["metric"], fingerprint=m.get("fingerprint"), uri=uri,
                   collection=p["collection"], token=token, index_type=p.get("index_type", "FLAT"),
                   index_params=p.get("index_params"), search_params=p.get("search_params"), _create=False)
        c = self.client
        if not c.has_collection(self.collection):
            raise IndexCorruptedError(f"Milvus collection {self.collection!r} named by {path / MANIFEST} does not exist at {uri}")
        desc = c.describe_collection(self.collection)
        dims = [int((f.get("params") or {}).get("dim", 0)) for f in desc.get("fields", []) if f.get("name") == VECTOR_FIELD]
        if dims and dims[0] != self.dim:
            raise IndexCorruptedError(f"Milvus collection {self.collection!r} holds dimension {dims[0]}, manifest says {self.dim}")
        c.load_collection(self.collection)
        self._ids = self._fetch_ids()
        return self

    def _fetch_ids(self) -> np.ndarray:
        """All primary keys in the collection, sorted (read in pages with a query iterator)."""
        it = self.client.query_iterator(self.collection, batch_size=8192, filter=f"{ID_FIELD} >= 0", output_fields=[ID_FIELD])
        parts = []
        try:
            while True:
                page = it.next()
                if not page:
                    break
                parts.append(np.fromiter((r[ID_FIELD] for r in page), np.int64, len(page)))
        finally:
            it.close()
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)



def drop_collection(collection: str, uri: str | os.PathLike | None = None, token: str | None = None) -> bool:
    """Drop ``collection`` from the store at ``uri`` (default: its Milvus Lite file) if it
    exists; returns whether it existed.  For re-running a notebook from scratch."""
    uri = str(uri) if uri is not None else default_uri(collection)
    if _is_local(uri) and not Path(uri).exists():
        return False
    client = _client(uri, token)
    if client.has_collection(collection):
        client.drop_collection(collection)
        return True
    return False
