"""The nearest-neighbour service: one ``VectorIndex`` interface over exact and approximate search.

``index.create(dim, kind="flat", metric="ip", fingerprint=None, **params)`` makes an index,
``index.load(path, expected_dim=None, expected_fingerprint=None)`` opens a saved one; both
return a :class:`VectorIndex` (the role; a ``typing.Protocol``):

=========  ===============================================================  ==================
kind       what it is                                                       module
=========  ===============================================================  ==================
flat       exact linear scan, O(N·D) per query (FAISS ``IndexFlat``)         :mod:`.faiss_index`
ivf        clustering: k-means cells, scan ``nprobe`` of them (IVF-Flat)      :mod:`.faiss_index`
ivfpq      IVF + product-quantised codes, optional exact re-ranking           :mod:`.faiss_index`
hnsw       graph: hierarchical navigable small world                        :mod:`.faiss_index`
lsh        random-hyperplane hashing, Hamming ranking                       :mod:`.faiss_index`
<string>   any FAISS ``index_factory`` string, e.g. ``"IVF256,PQ16"``         :mod:`.faiss_index`
tree       scikit-learn KD-tree / ball tree (exact: the tree family's       :mod:`.tree`
           lesson in high dimension)
annoy      Annoy's forest of random-projection trees (approximate trees)   :mod:`.annoy_index`
scann      ScaNN: partitions, anisotropic quantisation, exact re-scoring    :mod:`.scann_index`
milvus     a Milvus collection (Milvus Lite file, or a server / cluster)    :mod:`.milvus`
=========  ===============================================================  ==================

Conventions
-----------
- ``embeddings`` / ``queries``: ``(n, dim)`` float32, finite.  With ``metric="ip"`` (the
  course default) they should be L2-normalised, so the inner product is the cosine
  similarity; the ``tree`` and ``annoy`` kinds require it.
- ``ids``: ``(n,)`` int64, ``>= 0``, unique — the image ids of the platform database.
- ``search(queries, k) -> (scores, ids)``: ``(n, k)`` float32 and ``(n, k)`` int64, best
  first.  ``metric="ip"``: similarities (higher is better); ``metric="l2"``: squared
  Euclidean distances (lower is better).  **Padding**: when fewer than ``k`` results exist
  the missing entries have id ``-1`` and score ``-inf`` (``ip``) or ``+inf`` (``l2``).
- ``reconstruct(ids)`` returns stored float vectors (kinds that keep them); ``remove(ids)``
  deletes (HNSW rebuilds its graph, Annoy keeps tombstones until its next rebuild);
  ``set_search_params`` changes query-time knobs.

Persistence: ``save(path)`` writes a *directory* holding the data file(s), named by their
checksum, and ``manifest.json`` (kind, dim, metric, count, encoder fingerprint, params,
library versions, sha256 of every data file), written last: a save killed at any point
leaves the previous index loadable.  ``load`` verifies the checksums and refuses corrupted
files and indexes built for another encoder.

Also here: the one exact top-k (:mod:`.exact`), recall and throughput of an index
(:mod:`.measure`), the ann-benchmarks protocol on Fashion-MNIST with its peer libraries
(:mod:`.annbench`), synthetic clustered vectors (:mod:`.synthetic`) and the indexing
pipeline ``sync_index`` with the ``python -m vs_lib index`` command (:mod:`.sync`).
"""

from .annoy_index import AnnoyIndex
from .base import VectorIndex
from .errors import IndexCorruptedError, IndexMismatchError, VectorIndexError
from .exact import exact_topk, neighbour_recall
from .factory import KINDS, create, load
from .faiss_index import FaissIndex, auto_nlist, configure_faiss, faiss_memory_bytes, faiss_threads
from .measure import SearchMeasurement, measure_search
from .milvus import MilvusIndex
from .persistence import MANIFEST, Manifest
from .scann_index import ScannIndex
from .sync import (
    CLI_HELP,
    DEFAULT_MODEL,
    SyncResult,
    cli_add_arguments,
    cli_main,
    default_index_path,
    storage_keys,
    sync_index,
)
from .synthetic import clustered_vectors, synthetic_queries, synthetic_stream
from .tree import TreeIndex

__all__ = [
    "CLI_HELP",
    "DEFAULT_MODEL",
    "KINDS",
    "MANIFEST",
    "AnnoyIndex",
    "FaissIndex",
    "IndexCorruptedError",
    "IndexMismatchError",
    "Manifest",
    "MilvusIndex",
    "ScannIndex",
    "SearchMeasurement",
    "SyncResult",
    "TreeIndex",
    "VectorIndex",
    "VectorIndexError",
    "auto_nlist",
    "cli_add_arguments",
    "cli_main",
    "clustered_vectors",
    "configure_faiss",
    "create",
    "default_index_path",
    "exact_topk",
    "faiss_memory_bytes",
    "faiss_threads",
    "load",
    "measure_search",
    "neighbour_recall",
    "storage_keys",
    "sync_index",
    "synthetic_queries",
    "synthetic_stream",
]
