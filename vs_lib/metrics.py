"""Ranking metrics over ranked lists, and graded relevance for Fashion-MNIST.

Conventions:

- A ranked list is given by its **relevance grades**, position 1 first: a 1-D sequence of
  integers 0–5 (graded) or 0/1 (binary).  The binary metrics count a grade ``> 0`` as
  relevant.
- ``precision@k`` = relevant items in the top k / k (a list shorter than k counts the
  missing positions as not relevant).
- ``recall@k`` = relevant items in the top k / all relevant items; "all" are those in
  the list unless ``n_relevant`` (the total in the collection) is given.
- ``reciprocal rank`` = 1 / rank of the first relevant item, 0 if there is none.
- ``AP`` = Σ precision@i over the positions i holding a relevant item, divided by the
  number of relevant items in the list, or by ``n_relevant`` when given.
- ``DCG@p`` = Σ_{i=1..p} gain(rel_i) / log2(i + 1) with the **linear** gain
  ``gain(rel) = rel`` by default (``gain="exponential"`` uses ``2**rel - 1``);
  ``nDCG@p`` = DCG@p / DCG@p of the ideal ordering, which is the list's own grades sorted
  in decreasing order unless ``ideal`` grades (e.g. every candidate in the gallery) are
  given.  ``k=None`` means the whole list.
- A quantity with a zero denominator (no relevant item anywhere, an all-zero ideal) is 0.

Each function has a vectorised twin with the suffix ``_batch`` that takes a
``(queries, k)`` relevance matrix (every row a ranked list of the same length) and returns
one value per query, ``(queries,) float64``.  The scalar functions are the readable
definitions; the batch ones are what :mod:`vs_lib.evaluate` uses on 10,000 queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

GAINS = ("linear", "exponential")

# ----------------------------------------------------------------------------------------
# Graded relevance for Fashion-MNIST
# ----------------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: 10 × 10 similarity grades (0–5) between Fashion-MNIST classes, indexed by class label
#: (row = query class, column = result class).  A stand-in for human raters who would
#: answer "how good is this result for this query?":
#:
#: - **5** — same class (the only grade the binary metrics call relevant in evaluation).
#: - **Upper-body garments** (T-shirt/top, Pullover, Shirt, Coat, Dress) share a torso
#:   silhouette and are what a shopper browsing tops would accept as alternatives:
#:
#:   - Shirt–T-shirt **4**: both light tops, the classic confusion in Fashion-MNIST.
#:   - Pullover–Coat **4**: long-sleeved warm outerwear, nearly the same outline.
#:   - Shirt–Pullover **3**, Shirt–Coat **3**: long sleeves, front-opening or layered tops.
#:   - T-shirt–Pullover **3**: both pulled-over tops; sleeve length differs.
#:   - T-shirt–Coat **2**, Dress–T-shirt **2**, Dress–Shirt **2**, Dress–Coat **2**:
#:     same body region, different use (a dress is a full outfit; a coat goes over it).
#:   - Dress–Pullover **1**: covers the torso, little else in common.
#: - **Footwear** (Sandal, Sneaker, Ankle boot): Sneaker–Sandal **3** and
#:   Sneaker–Ankle boot **3** (low shoes / closed shoes), Sandal–Ankle boot **2** (the two
#:   ends of the open-to-closed range).
#: - **Trouser** and **Bag** stand apart: no other class is an acceptable substitute, so
#:   they get **0** with everything else, as do garments versus footwear.
#:
#: The table is symmetric.  It is a judgement, documented so that it can be argued with:
#: nDCG computed with it rewards "near misses" (a shirt for a T-shirt query) that the
#: binary same-class metrics count as plain errors.
FASHION_MNIST_GRADES: np.ndarray

_T, _TR, _P, _D, _C, _SA, _SH, _SN, _B, _AB = range(10)
_pairs = {
    (_SH, _T): 4,
    (_P, _C): 4,
    (_SH, _P): 3,
    (_SH, _C): 3,
    (_T, _P): 3,
    (_T, _C): 2,
    (_D, _T): 2,
    (_D, _SH): 2,
    (_D, _C): 2,
    (_D, _P): 1,
    (_SN, _SA): 3,
    (_SN, _AB): 3,
    (_SA, _AB): 2,
}
FASHION_MNIST_GRADES = np.zeros((10, 10), dtype=np.int64)
for (_a, _b), _g in _pairs.items():
    FASHION_MNIST_GRADES[_a, _b] = FASHION_MNIST_GRADES[_b, _a] = _g
np.fill_diagonal(FASHION_MNIST_GRADES, 5)
FASHION_MNIST_GRADES.setflags(write=False)
del _a, _b, _g, _pairs

MAX_GRADE = 5


def graded_relevance(query_labels: ArrayLike, result_labels: ArrayLike, grades: np.ndarray | None = None) -> np.ndarray:
    """Grades of results for queries, looked up in a class-similarity table.

    ``query_labels``: ``(q,)`` ints (or one int); ``result_labels``: ``(q, k)`` ints (or
    ``(k,)`` for one query).  Returns int64 grades of the same shape as ``result_labels``.
    ``grades`` defaults to :data:`FASHION_MNIST_GRADES`.
    """
    table = FASHION_MNIST_GRADES if grades is None else np.asarray(grades)
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError(f"grades must be a square (classes, classes) table, got shape {table.shape}")
    q = np.asarray(query_labels)
    r = np.asarray(result_labels)
    n = table.shape[0]
    for name, arr in (("query_labels", q), ("result_labels", r)):
        if arr.size and (arr.min() < 0 or arr.max() >= n or not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(
                f"{name} must be integer class labels in [0, {n}), got {arr.dtype} in [{arr.min()}, {arr.max()}]"
            )
    if q.ndim == 0:
        if r.ndim != 1:
            raise ValueError(f"one query label needs a 1-D result_labels, got shape {r.shape}")
        return table[int(q), r].astype(np.int64)
    if q.ndim != 1 or r.ndim != 2 or r.shape[0] != q.shape[0]:
        raise ValueError(f"expected query_labels (q,) and result_labels (q, k), got {q.shape} and {r.shape}")
    return table[q[:, None], r].astype(np.int64)


# ----------------------------------------------------------------------------------------
# One ranked list
# ----------------------------------------------------------------------------------------


def _grades(relevance: ArrayLike) -> np.ndarray:
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"relevance must be a 1-D sequence of grades (one ranked list), got shape {r.shape}")
    if r.size and (np.isnan(r).any() or r.min() < 0):
        raise ValueError("relevance grades must be non-negative numbers")
    return r


def _check_k(k: object, allow_none: bool = False) -> None:
    if k is None and allow_none:
        return
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer{' or None' if allow_none else ''}, got {k!r}")


def _gain(r: np.ndarray, gain: str) -> np.ndarray:
    if gain == "linear":
        return r
    if gain == "exponential":
        return np.power(2.0, r) - 1.0
    raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")


def precision_at_k(relevance: ArrayLike, k: int) -> float:
    """Relevant items (grade > 0) among the first ``k`` / ``k``."""
    _check_k(k)
    r = _grades(relevance)
    return float((r[:k] > 0).sum() / k)


def recall_at_k(relevance: ArrayLike, k: int, n_relevant: int | None = None) -> float:
    """Relevant items among the first ``k`` / all relevant items.

    "All" are the relevant items in the list unless ``n_relevant`` (the number in the whole
    collection, usually far more than the list shows) is given.  0 when there are none.
    """
    _check_k(k)
    r = _grades(relevance)
    total = int((r > 0).sum()) if n_relevant is None else int(n_relevant)
    if total < 0:
        raise ValueError(f"n_relevant must be >= 0, got {n_relevant}")
    hits = int((r[:k] > 0).sum())
    if n_relevant is not None and hits > total:
        raise ValueError(f"n_relevant={n_relevant} is smaller than the {hits} relevant items in the top {k}")
    return hits / total if total else 0.0


def reciprocal_rank(relevance: ArrayLike) -> float:
    """1 / (1-based rank of the first relevant item); 0 if no item is relevant."""
    r = _grades(relevance)
    hits = np.flatnonzero(r > 0)
    return 1.0 / (hits[0] + 1) if hits.size else 0.0


def average_precision(relevance: ArrayLike, n_relevant: int | None = None) -> float:
    """Σ precision@i over relevant positions i, / relevant items in the list (or ``n_relevant``)."""
    r = _grades(relevance) > 0
    hits = np.flatnonzero(r)
    total = hits.size if n_relevant is None else int(n_relevant)
    if n_relevant is not None and total < hits.size:
        raise ValueError(f"n_relevant={n_relevant} is smaller than the {hits.size} relevant items in the list")
    if total == 0:
        return 0.0
    precisions = np.arange(1, hits.size + 1) / (hits + 1)  # precision at each relevant position
    return float(precisions.sum() / total)


def dcg_at_k(relevance: ArrayLike, k: int | None = None, gain: str = "linear") -> float:
    """Σ_{i=1..k} gain(rel_i) / log2(i + 1); ``k=None`` = the whole list."""
    _check_k(k, allow_none=True)
    r = _grades(relevance)[:k]
    discounts = np.log2(np.arange(2, r.size + 2))
    return float((_gain(r, gain) / discounts).sum())


def ndcg_at_k(
    relevance: ArrayLike,
    k: int | None = None,
    gain: str = "linear",
    ideal: ArrayLike | None = None,
) -> float:
    """DCG@k / DCG@k of the ideal ordering, in [0, 1] when ``ideal`` covers the list.

    The ideal ordering is the list's own grades sorted in decreasing order, or the
    ``ideal`` grades sorted (pass the grades of every candidate in the collection to
    measure against the best list the collection allows).  0 if the ideal DCG is 0.
    """
    _check_k(k, allow_none=True)
    r = _grades(relevance)
    ideal_grades = r if ideal is None else _grades(ideal)
    depth = r.size if k is None else k  # "the whole list" is the ranked list, not the ideal
    idcg = dcg_at_k(np.sort(ideal_grades)[::-1][:depth], None, gain)
    return dcg_at_k(r, k, gain) / idcg if idcg > 0 else 0.0


def mean_reciprocal_rank(lists: Iterable[ArrayLike]) -> float:
    """Mean of :func:`reciprocal_rank` over ranked lists (lists may differ in length)."""
    values = [reciprocal_rank(r) for r in lists]
    if not values:
        raise ValueError("mean_reciprocal_rank needs at least one ranked list")
    return float(np.mean(values))


def mean_average_precision(lists: Iterable[ArrayLike], n_relevant: int | Sequence[int] | None = None) -> float:
    """Mean of :func:`average_precision`; ``n_relevant`` is one number or one per list."""
    ranked = list(lists)
    if not ranked:
        raise ValueError("mean_average_precision needs at least one ranked list")
    totals: list[int | None]
    if n_relevant is None or isinstance(n_relevant, int | np.integer):
        totals = [n_relevant] * len(ranked)
    else:
        totals = [int(t) for t in n_relevant]
        if len(totals) != len(ranked):
            raise ValueError(f"n_relevant has {len(totals)} entries for {len(ranked)} lists")
    return float(np.mean([average_precision(r, t) for r, t in zip(ranked, totals, strict=True)]))


def average_precision_at_r(relevance: ArrayLike, n_relevant: int) -> float:
    """AP@R: :func:`average_precision` of the top R results with R = ``n_relevant``.

    R is the number of relevant items in the whole collection, so a perfect score needs
    *every* relevant item ranked above every other: a test of whether a class forms one
    cluster.  Its mean over queries is MAP@R (Musgrave, Belongie & Lim, "A Metric Learning
    Reality Check", 2020).
    """
    r = int(n_relevant)
    if r < 0:
        raise ValueError(f"n_relevant must be >= 0, got {n_relevant}")
    return average_precision(_grades(relevance)[:r], r) if r else 0.0


# ----------------------------------------------------------------------------------------
# Vectorised: a (queries, k) relevance matrix, one value per query
# ----------------------------------------------------------------------------------------


def _matrix(relevance: ArrayLike) -> np.ndarray:
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"relevance must be a (queries, k) matrix, got shape {r.shape}")
    if r.size and (np.isnan(r).any() or r.min() < 0):
        raise ValueError("relevance grades must be non-negative numbers")
    return r


def _per_query(values: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(n, float(v))
    if v.shape != (n,):
        raise ValueError(f"{name} must be one number or one per query ({n},), got shape {v.shape}")
    if (v < 0).any():
        raise ValueError(f"{name} must be >= 0")
    return v


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_at_k_batch(relevance: ArrayLike, k: int) -> np.ndarray:
    """:func:`precision_at_k` for each row of a ``(queries, k')`` matrix."""
    _check_k(k)
    r = _matrix(relevance)
    return (r[:, :k] > 0).sum(axis=1) / k


def recall_at_k_batch(relevance: ArrayLike, k: int, n_relevant: ArrayLike | None = None) -> np.ndarray:
    """:func:`recall_at_k` per row; ``n_relevant`` is one number or ``(queries,)``."""
    _check_k(k)
    r = _matrix(relevance)
    totals = _per_query(n_relevant, r.shape[0], "n_relevant")
    hits = (r[:, :k] > 0).sum(axis=1).astype(np.float64)
    if totals is None:
        totals = (r > 0).sum(axis=1).astype(np.float64)
    elif (hits > totals).any():
        raise ValueError("n_relevant is smaller than the relevant items in the top k for some query")
    return _safe_divide(hits, totals)


def reciprocal_rank_batch(relevance: ArrayLike) -> np.ndarray:
    """:func:`reciprocal_rank` per row."""
    r = _matrix(relevance) > 0
    if r.shape[1] == 0:
        return np.zeros(r.shape[0])
    first = r.argmax(axis=1)
    return np.where(r.any(axis=1), 1.0 / (first + 1), 0.0)


def average_precision_batch(relevance: ArrayLike, n_relevant: ArrayLike | None = None) -> np.ndarray:
    """:func:`average_precision` per row; ``n_relevant`` is one number or ``(queries,)``."""
    r = _matrix(relevance) > 0
    totals = _per_query(n_relevant, r.shape[0], "n_relevant")
    cum_hits = np.cumsum(r, axis=1)
    positions = np.arange(1, r.shape[1] + 1)
    sum_prec = (r * (cum_hits / positions)).sum(axis=1)
    in_list = r.sum(axis=1).astype(np.float64)
    if totals is None:
        totals = in_list
    elif (in_list > totals).any():
        raise ValueError("n_relevant is smaller than the relevant items in the list for some query")
    return _safe_divide(sum_prec, totals)


def dcg_at_k_batch(relevance: ArrayLike, k: int | None = None, gain: str = "linear") -> np.ndarray:
    """:func:`dcg_at_k` per row."""
    _check_k(k, allow_none=True)
    r = _matrix(relevance)[:, :k]
    discounts = np.log2(np.arange(2, r.shape[1] + 2))
    return (_gain(r, gain) / discounts).sum(axis=1)


def ndcg_at_k_batch(
    relevance: ArrayLike, k: int | None = None, gain: str = "linear", ideal: ArrayLike | None = None
) -> np.ndarray:
    """:func:`ndcg_at_k` per row.

    ``ideal``: ``None`` (each row's own grades), or a ``(queries, m)`` matrix of ideal
    grades per query (any order; only the best ``k`` matter, so passing the top ``k``
    grades the collection holds for each query is enough).
    """
    _check_k(k, allow_none=True)
    r = _matrix(relevance)
    ideal_grades = r if ideal is None else _matrix(ideal)
    if ideal_grades.shape[0] != r.shape[0]:
        raise ValueError(f"ideal has {ideal_grades.shape[0]} rows for {r.shape[0]} queries")
    kk = r.shape[1] if k is None else k
    ideal_sorted = -np.sort(-ideal_grades, axis=1)[:, :kk]
    return _safe_divide(dcg_at_k_batch(r, k, gain), dcg_at_k_batch(ideal_sorted, None, gain))


def average_precision_at_r_batch(relevance: ArrayLike, n_relevant: ArrayLike) -> np.ndarray:
    """:func:`average_precision_at_r` per row; each row must hold at least its R results."""
    r = _matrix(relevance) > 0
    totals = _per_query(n_relevant, r.shape[0], "n_relevant")
    assert totals is not None
    if (totals > r.shape[1]).any():
        raise ValueError(f"rows hold {r.shape[1]} results but some query has R = {int(totals.max())} relevant items")
    within_r = np.arange(1, r.shape[1] + 1)[None, :] <= totals[:, None]
    return average_precision_batch(r & within_r, totals)
