"""A vector store that scales out: Milvus behind the ``VectorIndex`` interface (``kind="milvus"``).

The same client code (``pymilvus.MilvusClient``) talks to

- **Milvus Lite** (default): an embedded database in one local file,
  ``config.data_dir()/"milvus"/<collection>.db``, running inside this Python process —
  nothing to install or start;
- a **Milvus server or cluster**: pass ``uri="http://host:19530"`` (and ``token=`` if the
  server wants one).  A cluster shards a collection over data nodes, replicates segments
  over query nodes and builds indexes in the background; the calls below do not change.

``create(dim, "milvus", metric="ip", fingerprint=None, uri=None, collection=None, token=None,
index_type="FLAT", index_params=None, search_params=None)`` makes a new collection; Milvus
index types: ``"FLAT"`` (exact, the default, like ``kind="flat"``), ``"IVF_FLAT"``
(``index_params={"nlist": 128}``, ``search_params={"nprobe": 16}``), ``"HNSW"``
(``{"M": 16, "efConstruction": 200}``, ``{"ef": 64}``), ``"IVF_PQ"``, ``"AUTOINDEX"``.

It validates input, pads results and refuses unknown or duplicate ids exactly like the FAISS
kinds (the shared :class:`~vs_lib.index.base.BaseIndex`).  Differences, on purpose:

- writes go straight to the store: an ``add`` without a ``save`` is not lost, and another
  process attached to the same server sees it; an ``add`` is all or nothing;
- ``save(path)`` writes only ``path/manifest.json`` (kind ``"milvus"``, dim, metric, count,
  fingerprint, the store's ``uri`` — relative to ``path`` for a local file — and
  ``collection``): the vectors are already durable in Milvus, which is the point of a
  database.  ``load(path)`` takes the ids from the store, so ``sync_index`` reconciles the
  store with the ``images`` table even if the manifest is older;
- a Milvus Lite file can be opened by one process at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Self

import numpy as np

from .. import config
from .base import BaseIndex, check_k
from .errors import IndexCorruptedError
from .persistence import Manifest, OpenOptions

__all__ = ["MilvusIndex", "default_uri", "drop_collection"]

ID_FIELD = "id"
VECTOR_FIELD = "embedding"
MAX_TOPK = 16_384  # Milvus' limit on k
INSERT_BATCH = 4_096
QUERY_BATCH = 1_024
MILVUS_METRICS = {"ip": "IP", "l2": "L2"}
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_CLIENTS: dict[tuple[str, str | None], Any] = {}  # one client per store and credential in this process


def default_uri(collection: str) -> str:
    """The Milvus Lite file of ``collection``: ``config.data_dir()/"milvus"/<collection>.db``."""
    return str(config.data_dir() / "milvus" / f"{collection}.db")


def _is_local(uri: str) -> bool:
    return not re.match(r"^[a-z]+://", uri)


def _client(uri: str, token: str | None = None) -> Any:
    """One ``MilvusClient`` per (uri, token) in this process (Milvus Lite opens a file once)."""
    from pymilvus import MilvusClient

    key = (uri, token)
    client = _CLIENTS.get(key)
    if client is None:
        if _is_local(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        client = MilvusClient(uri, **({"token": token} if token else {}))
        _CLIENTS[key] = client
    return client


def drop_collection(collection: str, uri: str | os.PathLike[str] | None = None, token: str | None = None) -> bool:
    """Drop ``collection`` from the store at ``uri`` (default: its Milvus Lite file) if it
    exists; returns whether it existed.  For re-running a notebook from scratch."""
    where = str(uri) if uri is not None else default_uri(collection)
    if _is_local(where) and not Path(where).exists():
        return False
    client = _client(where, token)
    if client.has_collection(collection):
        client.drop_collection(collection)
        return True
    return False


class MilvusIndex(BaseIndex):
    """A ``VectorIndex`` stored in a Milvus collection (see the module doc)."""

    kind = "milvus"

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        *,
        fingerprint: str | None = None,
        uri: str | os.PathLike[str] | None = None,
        collection: str | None = None,
        token: str | None = None,
        index_type: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
    ):
        """A new, empty collection (``ValueError`` if ``collection`` already exists at ``uri``)."""
        self._configure(dim, metric, fingerprint, uri, collection, token, index_type, index_params, search_params)
        self._create_collection()

    def _configure(
        self,
        dim: int,
        metric: str,
        fingerprint: str | None,
        uri: str | os.PathLike[str] | None,
        collection: str | None,
        token: str | None,
        index_type: str,
        index_params: dict[str, Any] | None,
        search_params: dict[str, Any] | None,
    ) -> None:
        super().__init__(dim, metric, fingerprint=fingerprint)
        if collection is not None and not COLLECTION_NAME.match(collection):
            raise ValueError(
                f"collection must be a Milvus name (letters, digits, _; not starting with a digit), got {collection!r}"
            )
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

    # ------------------------------------------------------------------ the store
    @property
    def client(self) -> Any:
        return _client(self.uri, self._token)

    def _create_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        c = self.client
        if c.has_collection(self.collection):
            raise ValueError(
                f"Milvus collection {self.collection!r} already exists at {self.uri}; "
                "open it with index.load(<index dir>) or choose another collection name"
            )
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        ip = c.prepare_index_params()
        ip.add_index(
            field_name=VECTOR_FIELD,
            index_type=self.params["index_type"],
            metric_type=MILVUS_METRICS[self.metric],
            params=self.params["index_params"],
        )
        try:
            c.create_collection(self.collection, schema=schema, index_params=ip, consistency_level="Strong")
        except Exception as e:  # pymilvus raises MilvusException for bad index types / params
            raise ValueError(
                f"Milvus refused the collection ({self.params['index_type']}, {self.params['index_params']}): {e}"
            ) from None

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
        with contextlib.suppress(Exception):  # Milvus Lite versions without flush: writes are already durable
            self.client.flush(self.collection)

    # ------------------------------------------------------------------ the VectorIndex role
    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        done = 0
        try:
            for s in range(0, len(x), INSERT_BATCH):
                rows = [
                    {ID_FIELD: int(i), VECTOR_FIELD: v}
                    for i, v in zip(ids[s : s + INSERT_BATCH], x[s : s + INSERT_BATCH], strict=True)
                ]
                self.client.insert(self.collection, rows)
                done = s + len(rows)
        except BaseException:
            if done:  # all or nothing: take back the batches already written
                self.client.delete(self.collection, ids=ids[:done].tolist())
            raise
        if len(x) >= INSERT_BATCH:
            self.flush()  # seal the segment: searches then use its index, not a slow scan of a growing segment

    def _remove(self, ids: np.ndarray) -> None:
        for s in range(0, len(ids), INSERT_BATCH):
            self.client.delete(self.collection, ids=ids[s : s + INSERT_BATCH].tolist())

    def set_search_params(self, **params: Any) -> Self:
        """Query-time knobs passed to Milvus (``nprobe`` for IVF, ``ef`` for HNSW)."""
        self.params["search_params"].update(params)
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query (``k`` at most Milvus' 16,384)."""
        if check_k(k) > MAX_TOPK:
            raise ValueError(f"k must be at most {MAX_TOPK} for Milvus, got {k}")
        return super().search(queries, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.zeros((len(q), k), np.float32)
        found = np.full((len(q), k), -1, np.int64)
        sp = {"metric_type": MILVUS_METRICS[self.metric], "params": dict(self.params["search_params"])}
        for s in range(0, len(q), QUERY_BATCH):
            res = self.client.search(
                self.collection,
                data=list(q[s : s + QUERY_BATCH]),
                limit=k,
                output_fields=[ID_FIELD],
                search_params=sp,
                anns_field=VECTOR_FIELD,
            )
            for r, hits in enumerate(res):
                if len(hits):
                    found[s + r, : len(hits)] = [h["id"] for h in hits]
                    scores[s + r, : len(hits)] = [h["distance"] for h in hits]
        return scores, found

    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The vectors, read back from the store."""
        found: dict[int, Any] = {}
        uniq = np.unique(ids)
        for s in range(0, len(uniq), QUERY_BATCH):
            rows = self.client.get(
                self.collection, ids=uniq[s : s + QUERY_BATCH].tolist(), output_fields=[VECTOR_FIELD]
            )
            found.update({int(row[ID_FIELD]): row[VECTOR_FIELD] for row in rows})
        missing = [i for i in ids.tolist() if i not in found]
        if missing:
            raise KeyError(f"ids not in the Milvus collection: {missing[:5]}")
        return np.asarray([found[i] for i in ids.tolist()], dtype=np.float32).reshape(len(ids), self.dim)

    def __repr__(self) -> str:
        return (
            f"MilvusIndex(dim={self.dim}, metric={self.metric!r}, n={len(self)}, uri={self.uri!r}, "
            f"collection={self.collection!r}, index_type={self.params['index_type']!r})"
        )

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
    def _versions(self) -> dict[str, str]:
        import pymilvus

        return {"pymilvus": pymilvus.__version__}

    def _write_files(self, folder: Path) -> dict[str, dict[str, str]]:
        self.flush()  # the data lives in the store; the manifest only names it
        return {}

    def _manifest_params(self, folder: Path) -> dict[str, Any]:
        """Local files inside or near the index folder are recorded relative to it (movable)."""
        uri = self.uri
        if _is_local(uri):
            try:
                uri = os.path.relpath(Path(uri).resolve(), folder.resolve())
            except ValueError:  # another drive
                uri = str(Path(uri).resolve())
        return {**self.params, "uri": uri}

    def _manifest_extra(self) -> dict[str, Any]:
        return {"uri_is_local": _is_local(self.uri)}

    @classmethod
    def from_manifest(cls, path: Path, manifest: Manifest, options: OpenOptions) -> Self:
        """Attach to the collection an already checked ``manifest`` names; ids come from the store."""
        p = manifest.params
        uri, collection = p.get("uri"), p.get("collection")
        if not uri or not collection:
            raise IndexCorruptedError(f"{path} names no Milvus uri/collection in its manifest")
        local = bool(manifest.extra.get("uri_is_local", _is_local(uri)))
        if local and not os.path.isabs(uri):
            uri = str((path / uri).resolve())
        if local and not Path(uri).exists():
            raise IndexCorruptedError(f"the Milvus Lite file {uri} named by the manifest of {path} is missing")
        self = cls.__new__(cls)
        self._configure(
            manifest.dim,
            manifest.metric,
            manifest.fingerprint,
            uri,
            collection,
            options.token,
            p.get("index_type", "FLAT"),
            p.get("index_params"),
            p.get("search_params"),
        )
        c = self.client
        if not c.has_collection(self.collection):
            raise IndexCorruptedError(f"Milvus collection {self.collection!r} named by {path} does not exist at {uri}")
        desc = c.describe_collection(self.collection)
        dims = [
            int((f.get("params") or {}).get("dim", 0)) for f in desc.get("fields", []) if f.get("name") == VECTOR_FIELD
        ]
        if dims and dims[0] != self.dim:
            raise IndexCorruptedError(
                f"Milvus collection {self.collection!r} holds dimension {dims[0]}, manifest says {self.dim}"
            )
        c.load_collection(self.collection)
        self._ids = self._fetch_ids()
        return self

    def _fetch_ids(self) -> np.ndarray:
        """All primary keys in the collection, sorted (read in pages with a query iterator)."""
        it = self.client.query_iterator(
            self.collection, batch_size=8192, filter=f"{ID_FIELD} >= 0", output_fields=[ID_FIELD]
        )
        parts = []
        try:
            while page := it.next():
                parts.append(np.fromiter((r[ID_FIELD] for r in page), np.int64, len(page)))
        finally:
            it.close()
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)
