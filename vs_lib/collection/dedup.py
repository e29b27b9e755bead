"""Exact and near-duplicate groups without an N x N matrix, and ``python -m vs_lib dedup DIR``.

Three rules link two images; the groups are the connected components of the links:

- **exact**: the same bytes (equal SHA-256);
- **perceptual hash**: 64-bit pHashes within ``threshold`` bits.  The candidate pairs come
  from FAISS's multi-index hashing (``IndexBinaryMultiHash``): the 64 bits are cut into 4
  chunks of 16, and two hashes within ``t`` bits agree on at least one chunk up to
  ``t // 4`` flipped bits (pigeonhole), so only hashes that share a bucket are compared;
- **embedding** (optional, ``min_cosine``): each image's nearest neighbours from a vector
  index (exact for small collections, IVF beyond :data:`IVF_FROM` images), linked when their
  cosine similarity reaches ``min_cosine``.

Work and memory grow with the number of images and of links found, not with its square: a
dense matrix of 100,000 images would take 40 GB in float32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .store import CollectionError

__all__ = [
    "CLI_HELP",
    "DEFAULT_THRESHOLD",
    "DedupReport",
    "DuplicateGroup",
    "cli_add_arguments",
    "cli_main",
    "duplicate_groups",
    "embedding_pairs",
    "find_duplicates",
    "hash_pairs",
]

DEFAULT_THRESHOLD = 4  # bits of 64
IVF_FROM = 20_000  # from this many images the embedding neighbours come from an IVF index
NEIGHBOURS = 10


@dataclass(frozen=True)
class DuplicateGroup:
    """Images linked by the rules: ``rows`` (sorted), ``kind`` ``"exact"`` (all the same
    bytes) or ``"near"``, and ``paths`` when the group comes from a collection."""

    rows: tuple[int, ...]
    kind: str
    paths: tuple[str, ...] = ()


@dataclass
class DedupReport:
    """The groups (largest first) and how they were found."""

    n_images: int
    threshold: int | None
    min_cosine: float | None
    groups: list[DuplicateGroup] = field(default_factory=list)
    pairs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        """Images that could go: every group's members but one."""
        return sum(len(g.rows) - 1 for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = [
            {"kind": g.kind, "size": len(g.rows), "paths": list(g.paths) or list(g.rows)} for g in self.groups
        ]
        d["duplicates"] = self.duplicates
        return d


def _unique_pairs(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(m, 2) int64 pairs with i < j, each once."""
    a, b = np.minimum(i, j), np.maximum(i, j)
    keep = a != b
    pairs = np.stack([a[keep], b[keep]], axis=1).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def hash_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """(m, 2) row pairs ``i < j`` whose 64-bit hashes differ in at most ``threshold`` bits."""
    import faiss

    h = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64))
    if h.ndim != 1:
        raise ValueError(f"hashes must be (n,) uint64, got shape {h.shape}")
    if not 0 <= int(threshold) <= 32:
        raise CollectionError(f"the hash threshold is a number of bits between 0 and 32, got {threshold}")
    if len(h) < 2:
        return np.zeros((0, 2), np.int64)
    codes = h.view(np.uint8).reshape(len(h), 8)
    idx = faiss.IndexBinaryMultiHash(64, 4, 16)
    idx.nflip = int(threshold) // 4
    idx.add(codes)
    lims, _, found = idx.range_search(codes, int(threshold) + 1)  # distances < radius
    rows = np.repeat(np.arange(len(h), dtype=np.int64), np.diff(lims).astype(np.int64))
    return _unique_pairs(rows, found.astype(np.int64))


def embedding_pairs(vectors: np.ndarray, min_cosine: float, k: int = NEIGHBOURS, chunk: int = 4096) -> np.ndarray:
    """(m, 2) row pairs ``i < j`` among each row's ``k`` nearest neighbours with cosine ``>= min_cosine``.

    ``vectors``: (n, d) float32 L2-normalised.  An exact index up to :data:`IVF_FROM` rows,
    an IVF index (k-means cells, a few probed per query) beyond.
    """
    from .. import index as vindex

    v = np.ascontiguousarray(vectors, np.float32)
    n = len(v)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    params: dict[str, Any] = {"nprobe": 8} if n >= IVF_FROM else {}
    idx = vindex.create(v.shape[1], "ivf" if n >= IVF_FROM else "flat", **params)
    idx.add(v, np.arange(n, dtype=np.int64))
    kk = min(n, int(k) + 1)
    parts_i, parts_j = [], []
    for s in range(0, n, chunk):
        scores, ids = idx.search(v[s : s + chunk], kk)
        rows = np.repeat(np.arange(s, s + len(ids), dtype=np.int64), kk).reshape(len(ids), kk)
        keep = (ids >= 0) & (scores >= min_cosine)
        parts_i.append(rows[keep])
        parts_j.append(ids[keep])
    return _unique_pairs(np.concatenate(parts_i), np.concatenate(parts_j))


def duplicate_groups(
    n: int,
    *,
    sha256: list[str] | None = None,
    hashes: np.ndarray | None = None,
    threshold: int | None = DEFAULT_THRESHOLD,
    vectors: np.ndarray | None = None,
    min_cosine: float | None = None,
) -> tuple[list[DuplicateGroup], dict[str, int]]:
    """Groups of ``n`` images linked by any rule given (see the module doc); ``(groups, pairs per rule)``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    links = []
    counts: dict[str, int] = {}
    if sha256 is not None:
        _, inverse = np.unique(np.asarray(sha256), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        same = inverse[order][1:] == inverse[order][:-1]
        exact = np.stack([order[:-1][same], order[1:][same]], axis=1).astype(np.int64)
        links.append(exact)
        counts["exact"] = len(exact)
    if hashes is not None and threshold is not None:
        p = hash_pairs(hashes, threshold)
        links.append(p)
        counts["phash"] = len(p)
    if vectors is not None and min_cosine is not None:
        p = embedding_pairs(vectors, min_cosine)
        links.append(p)
        counts["embedding"] = len(p)
    pairs = np.concatenate(links) if links else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_comp, label = connected_components(graph, directed=False)
    sizes = np.bincount(label, minlength=n_comp)
    order = np.argsort(label, kind="stable")  # rows grouped by component, ascending within each
    starts = np.concatenate([[0], np.cumsum(sizes)])
    groups = []
    for comp in np.flatnonzero(sizes > 1):
        rows = tuple(order[starts[comp] : starts[comp + 1]].tolist())
        kind = "exact" if sha256 is not None and len({sha256[r] for r in rows}) == 1 else "near"
        groups.append(DuplicateGroup(rows, kind))
    groups.sort(key=lambda g: (-len(g.rows), g.rows))
    return groups, counts


def find_duplicates(
    coll: Any, threshold: int | None = DEFAULT_THRESHOLD, min_cosine: float | None = None
) -> DedupReport:
    """The duplicate groups of a :class:`~vs_lib.collection.Collection`, with its paths."""
    t0 = time.perf_counter()
    records = coll.state.records
    groups, counts = duplicate_groups(
        len(records),
        sha256=[r.sha256 for r in records],
        hashes=np.array([r.phash for r in records], dtype=np.uint64),
        threshold=threshold,
        vectors=coll.state.vectors if min_cosine is not None else None,
        min_cosine=min_cosine,
    )
    paths = coll.paths()
    named = [DuplicateGroup(g.rows, g.kind, tuple(paths[r] for r in g.rows)) for g in groups]
    return DedupReport(len(records), threshold, min_cosine, named, counts, time.perf_counter() - t0)


# --------------------------------------------------------------------------- python -m vs_lib dedup DIR
CLI_HELP = "list exact and near-duplicate images of a folder (indexes it first, incrementally)"


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, metavar="DIR", help="the folder (indexed or updated first)")
    parser.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        help=f"perceptual-hash bits of 64 (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument("--min-cosine", type=float, default=None, help="also link images this similar (e.g. 0.95)")
    parser.add_argument("--name", default=None, help="collection name (default: the folder's own name)")
    parser.add_argument("--model", default="photo", help="encoder of the collection (default photo)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (PNG) of the groups")


def cli_main(args: argparse.Namespace) -> int:
    from .search import Collection
    from .sync import index_folder

    try:
        if not 0 <= args.threshold <= 32:
            raise CollectionError(f"--threshold is a number of bits between 0 and 32, got {args.threshold}")
        sync = index_folder(args.folder, name=args.name, model=args.model, progress=not args.json)
        coll = Collection.open(name=sync.name)
        report = find_duplicates(coll, args.threshold, args.min_cosine)
    except (CollectionError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.sheet is not None:
        from .sheet import groups_sheet, write_png

        write_png(groups_sheet(report.groups, coll.image), args.sheet)
    if args.json:
        print(json.dumps({"collection": coll.name, "folder": str(coll.folder), **report.to_json()}, indent=2))
        return 0
    print(sync.summary(), file=sys.stderr)
    print(
        f"{len(report.groups)} groups, {report.duplicates} duplicate images among {report.n_images} ({report.seconds:.2f} s)"
    )
    for g in report.groups:
        print(f"  [{g.kind}] " + "  ".join(g.paths))
    if args.sheet is not None:
        print(f"contact sheet: {args.sheet}")
    return 0
