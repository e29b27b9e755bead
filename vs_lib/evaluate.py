"""Offline evaluation: rank a gallery for every query, score each ranked list, aggregate.

The protocol the course uses (:func:`default_protocol`): the 10,000 Fashion-MNIST **test**
images are the queries, the 60,000 **training** images the gallery, and an item is
relevant to a query when it has the same class (binary metrics) or by the documented
grade table :data:`vs_lib.metrics.FASHION_MNIST_GRADES` (nDCG).  When queries are also in
the gallery (matched by id) a query is never its own result.

Per query and at one cut-off ``k`` the tidy table :attr:`Evaluation.per_query` holds

- ``precision@k``  same-class results in the top k / k
- ``recall@k``     same-class results in the top k / same-class items in the gallery
  (thousands here, so it is tiny: recall's huge-denominator weakness, kept on purpose)
- ``hit@k``        1 if any of the top k is same-class (recall of "at least one")
- ``rr@k``         reciprocal rank of the first same-class result within the top k; its
  mean is MRR@k
- ``ap@k``         average precision of the top k, divided by min(k, same-class items in
  the gallery) so that a perfect top k scores 1; its mean is mAP@k
- ``ndcg@k``       graded nDCG@k (linear gain) against the best top k the gallery allows

:meth:`Evaluation.summary` averages them with bootstrap intervals
(:func:`vs_lib.stats.bootstrap_ci`); :func:`vs_lib.viz.failure_gallery` draws the worst queries.

:func:`ranking_metrics` gives the four figures notebook 03 compares models by (P@1, P@k,
mAP@k and MAP@R, which ranks each query's whole class), from the same metric functions.
Every ranking comes from :func:`vs_lib.index.exact.exact_topk`, the library's one exact
search (embeddings are L2-normalised, so the inner product is the cosine similarity);
10,000 × 60,000 takes seconds, see ``benchmarks/evaluate.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from . import config, metrics
from .index.exact import exact_topk
from .protocols import Encoder
from .stats import bootstrap_ci

if TYPE_CHECKING:
    from .data import FashionMNIST

CLI_HELP = "offline evaluation of saved encoders on the test set"

METRICS = ("precision", "recall", "hit", "rr", "ap", "ndcg")
#: how each per-query column is called once averaged over queries
AGGREGATE_NAMES = {"precision": "P", "recall": "R", "hit": "HitRate", "rr": "MRR", "ap": "mAP", "ndcg": "nDCG"}
#: the smoke profile's protocol: a seeded sample of test queries and training images
SMOKE_QUERIES, SMOKE_GALLERY = 500, 3000


def metric_columns(k: int) -> list[str]:
    """Names of the per-query metric columns at cut-off ``k`` (``precision@10``, ...)."""
    return [f"{m}@{k}" for m in METRICS]


# ----------------------------------------------------------------------------------------
# The evaluation
# ----------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Ranked lists and per-query metrics of one system on one query set."""

    name: str
    k: int
    per_query: pd.DataFrame  # one row per query: query_id, label, class_name, n_relevant, metrics
    result_ids: np.ndarray  # (q, k) int64 gallery ids, best first
    result_labels: np.ndarray  # (q, k) int64
    result_scores: np.ndarray  # (q, k) float32 similarities
    seconds: dict[str, float] = field(default_factory=dict)  # timing of the stages

    @property
    def metric_columns(self) -> list[str]:
        return metric_columns(self.k)

    def summary(self, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
        """Mean of every metric over queries with a bootstrap interval (queries resampled).

        Index: ``MRR@k``, ``mAP@k`` ... (see ``AGGREGATE_NAMES``); columns ``mean, low, high``.
        """
        mean, lo, hi = bootstrap_ci(self.per_query[self.metric_columns].to_numpy(), n_boot, ci, seed)
        index = [f"{AGGREGATE_NAMES[m]}@{self.k}" for m in METRICS]
        return pd.DataFrame({"mean": mean, "low": lo, "high": hi}, index=pd.Index(index, name="metric"))

    def per_class(self) -> pd.DataFrame:
        """Mean of every metric for the queries of each class (rows sorted by mAP)."""
        groups = self.per_query.groupby("class_name", sort=False, observed=True)
        table = groups[self.metric_columns].mean()
        table.columns = [f"{AGGREGATE_NAMES[m]}@{self.k}" for m in METRICS]
        table["queries"] = groups.size()
        return table.sort_values(f"mAP@{self.k}")

    def failures(self, n: int = 8, by: str | None = None) -> pd.DataFrame:
        """The ``n`` worst queries (lowest ``by``, default ``ap@k`` then ``ndcg@k``) with their top k."""
        by = by or f"ap@{self.k}"
        if by not in self.per_query.columns:
            raise ValueError(f"by must be one of {self.metric_columns}, got {by!r}")
        order = np.lexsort((self.per_query[f"ndcg@{self.k}"].to_numpy(), self.per_query[by].to_numpy()))[:n]
        worst = self.per_query.iloc[order].copy()
        worst["result_ids"] = [list(map(int, r)) for r in self.result_ids[order]]
        worst["result_labels"] = [list(map(int, r)) for r in self.result_labels[order]]
        return worst

    def confusion(self, n_classes: int = 10) -> pd.DataFrame:
        """Share of the top-k results of each query class that fall in each class."""
        q = self.per_query["label"].to_numpy()
        counts = np.zeros((n_classes, n_classes))
        np.add.at(counts, (np.repeat(q, self.k), self.result_labels.ravel()), 1)
        counts /= np.maximum(counts.sum(1, keepdims=True), 1)
        return pd.DataFrame(counts)


def _ideal_grades(
    query_labels: np.ndarray, in_gallery: np.ndarray, class_counts: np.ndarray, grades: np.ndarray, k: int
) -> np.ndarray:
    """(q, k) the best k grades the gallery holds for each query (itself left out when inside)."""
    ideal = np.empty((len(query_labels), k))
    for c in np.unique(query_labels):
        for inside in (False, True):
            rows = (query_labels == c) & (in_gallery == inside)
            if rows.any():
                counts = class_counts.copy()
                counts[c] -= int(inside)
                ideal[rows] = np.sort(np.repeat(grades[c], counts))[::-1][:k]
    return ideal


def evaluate_embeddings(
    query_embeddings: np.ndarray,
    query_labels: ArrayLike,
    gallery_embeddings: np.ndarray,
    gallery_labels: ArrayLike,
    *,
    k: int = 10,
    query_ids: ArrayLike | None = None,
    gallery_ids: ArrayLike | None = None,
    grades: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "",
    chunk_size: int = 1024,
    progress: bool = False,
) -> Evaluation:
    """Rank the gallery for every query and score each list (see the module docstring).

    Embeddings ``(q, d)`` / ``(n, d)`` float32, L2-normalised; labels int class ids.
    ``query_ids`` / ``gallery_ids`` default to ``0..q-1`` / ``0..n-1`` and are treated as
    disjoint unless both are given (then a query found in the gallery is excluded from its
    own results and from its count of relevant items).
    """
    grades = metrics.FASHION_MNIST_GRADES if grades is None else np.asarray(grades)
    n_classes = grades.shape[0]
    names = list(class_names or (metrics.FASHION_MNIST_CLASSES if n_classes == 10 else map(str, range(n_classes))))
    ql = np.asarray(query_labels, dtype=np.int64)
    gl = np.asarray(gallery_labels, dtype=np.int64)
    if ql.shape != (len(query_embeddings),) or gl.shape != (len(gallery_embeddings),):
        raise ValueError(
            f"need one label per embedding: queries {len(query_embeddings)} vs {ql.shape}, "
            f"gallery {len(gallery_embeddings)} vs {gl.shape}"
        )
    given_ids = query_ids is not None and gallery_ids is not None
    qid = np.asarray(query_ids if query_ids is not None else np.arange(len(ql)), dtype=np.int64)
    gid = np.asarray(gallery_ids if gallery_ids is not None else np.arange(len(gl)), dtype=np.int64)
    if given_ids and (qid.shape != ql.shape or gid.shape != gl.shape):
        raise ValueError(f"query_ids must be {ql.shape} and gallery_ids {gl.shape}, got {qid.shape} and {gid.shape}")
    # the gallery row of each query that is itself in the gallery (-1: not there)
    self_row = pd.Index(gid).get_indexer(qid) if given_ids else np.full(len(ql), -1)

    t0 = time.perf_counter()
    scores, pos = exact_topk(
        query_embeddings, gallery_embeddings, k, exclude=self_row, chunk=chunk_size, progress=progress
    )
    t1 = time.perf_counter()

    result_labels = gl[pos]
    graded = metrics.graded_relevance(ql, result_labels, grades)
    binary = (result_labels == ql[:, None]).astype(np.int8)
    in_gallery = self_row >= 0
    class_counts = np.bincount(gl, minlength=n_classes)
    n_relevant = class_counts[ql] - in_gallery.astype(np.int64)
    ideal = _ideal_grades(ql, in_gallery, class_counts, grades, k)
    per_query = pd.DataFrame(
        {
            "query_id": qid,
            "label": ql,
            "class_name": pd.Categorical([names[c] for c in ql], categories=names),
            "n_relevant": n_relevant,
            f"precision@{k}": metrics.precision_at_k_batch(binary, k),
            f"recall@{k}": metrics.recall_at_k_batch(binary, k, n_relevant),
            f"hit@{k}": binary.any(axis=1).astype(np.float64),
            f"rr@{k}": metrics.reciprocal_rank_batch(binary),
            f"ap@{k}": metrics.average_precision_batch(binary, np.minimum(n_relevant, k)),
            f"ndcg@{k}": metrics.ndcg_at_k_batch(graded, k, ideal=ideal),
        }
    )
    seconds = {"search": t1 - t0, "metrics": time.perf_counter() - t1}
    return Evaluation(name, k, per_query, gid[pos], result_labels, scores, seconds)


def evaluate_encoder(
    encoder: Encoder,
    query_images: np.ndarray,
    query_labels: ArrayLike,
    gallery_images: np.ndarray,
    gallery_labels: ArrayLike,
    *,
    batch_size: int = 512,
    name: str | None = None,
    cache: bool = False,
    k: int = 10,
    query_ids: ArrayLike | None = None,
    gallery_ids: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = False,
) -> Evaluation:
    """Embed queries and gallery with ``encoder.embed`` then :func:`evaluate_embeddings`.

    ``cache=True`` keeps the embeddings on disk (:func:`cached_embed`).
    """
    t0 = time.perf_counter()
    if cache:
        g, q = cached_embed(encoder, gallery_images, batch_size), cached_embed(encoder, query_images, batch_size)
    else:
        g, q = encoder.embed(gallery_images, batch_size=batch_size), encoder.embed(query_images, batch_size=batch_size)
    t1 = time.perf_counter()
    ev = evaluate_embeddings(
        q,
        query_labels,
        g,
        gallery_labels,
        k=k,
        query_ids=query_ids,
        gallery_ids=gallery_ids,
        class_names=class_names,
        name=encoder.name if name is None else name,
        progress=progress,
    )
    ev.seconds["embed"] = t1 - t0
    return ev


def embeddings_cache_dir() -> Path:
    """Where :func:`cached_embed` keeps embeddings (``data/embeddings``)."""
    return config.data_dir() / "embeddings"


def cached_embed(encoder: Encoder, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``encoder.embed(images)``, kept on disk under the encoder's fingerprint and the images' hash.

    Notebooks 05, 06 and 07 embed the same corpus with the same encoders; the first pays,
    the others read a ``.npy``.  A changed model or image set changes the key, so a stale
    file is never read.  Written atomically.
    """
    arr = np.ascontiguousarray(images)
    h = hashlib.sha256(arr.tobytes())
    h.update(str((arr.shape, arr.dtype.str)).encode())
    path = embeddings_cache_dir() / f"{encoder.fingerprint}-{h.hexdigest()[:16]}.npy"
    if path.exists():
        try:
            out = np.load(path)
            if out.shape == (len(arr), encoder.dim):
                return out
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    out = encoder.embed(arr, batch_size=batch_size)
    with config.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    return out


# ----------------------------------------------------------------------------------------
# The four figures of the model comparison (notebook 03, benchmarks/quality.py)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingMetrics:
    """Means over queries, same class = relevant, exact cosine search.

    ``precision_at_1``: share of queries whose best result has their class;
    ``precision_at_k``, ``map_at_k``: P@k and mAP@k as in :class:`Evaluation`;
    ``map_at_r``: MAP@R, with R = the query's same-class items in the gallery.
    """

    k: int
    precision_at_1: float
    precision_at_k: float
    map_at_k: float
    map_at_r: float

    def as_row(self) -> dict[str, float]:
        """The figures under their table names: ``P@1``, ``P@k``, ``mAP@k``, ``MAP@R``."""
        k = self.k
        return {
            "P@1": self.precision_at_1,
            f"P@{k}": self.precision_at_k,
            f"mAP@{k}": self.map_at_k,
            "MAP@R": self.map_at_r,
        }


def ranking_metrics(
    query_embeddings: np.ndarray,
    query_labels: ArrayLike,
    gallery_embeddings: np.ndarray,
    gallery_labels: ArrayLike,
    k: int = 10,
    chunk: int = 500,
) -> RankingMetrics:
    """P@1, P@k, mAP@k and MAP@R of every query against the gallery (disjoint sets).

    Embeddings ``(q, d)`` / ``(n, d)`` float32 L2-normalised, labels int class ids.  Each
    chunk of queries ranks the top ``max(k, R)`` results (R up to 6,000 here), scores
    them with :mod:`vs_lib.metrics`, and is dropped.
    """
    ql = np.asarray(query_labels, dtype=np.int64)
    gl = np.asarray(gallery_labels, dtype=np.int64)
    if ql.shape != (len(query_embeddings),) or gl.shape != (len(gallery_embeddings),):
        raise ValueError("need one label per query embedding and one per gallery embedding")
    n_relevant = np.bincount(gl, minlength=int(max(gl.max(), ql.max())) + 1)[ql]
    depth = int(min(len(gl), max(k, n_relevant.max())))
    totals = np.zeros(4)
    for s in range(0, len(ql), chunk):
        _, pos = exact_topk(query_embeddings[s : s + chunk], gallery_embeddings, depth)
        relevant = gl[pos] == ql[s : s + chunk, None]
        r = n_relevant[s : s + chunk]
        totals += [
            metrics.precision_at_k_batch(relevant, 1).sum(),
            metrics.precision_at_k_batch(relevant, k).sum(),
            metrics.average_precision_batch(relevant[:, :k], np.minimum(r, k)).sum(),
            metrics.average_precision_at_r_batch(relevant, r).sum(),
        ]
    p1, pk, map_k, map_r = (float(t) / len(ql) for t in totals)
    return RankingMetrics(k, p1, pk, map_k, map_r)


@dataclass(frozen=True)
class ProtocolMetrics(RankingMetrics):
    """:class:`RankingMetrics` on the course protocol, plus the encoder's size and speed."""

    dim: int = 0
    embed_images_per_second: float = float("nan")


def protocol_metrics(encoder: Encoder, protocol: EvaluationProtocol | None = None, k: int = 10) -> ProtocolMetrics:
    """Embed the protocol's gallery and queries (timed) and score them (:func:`ranking_metrics`).

    ``protocol`` defaults to the full one: 10,000 test queries, 60,000 training images.
    """
    proto = protocol if protocol is not None else default_protocol()
    t0 = time.perf_counter()
    gallery = encoder.embed(proto.gallery_images)
    queries = encoder.embed(proto.query_images)
    speed = (len(gallery) + len(queries)) / max(time.perf_counter() - t0, 1e-9)
    m = ranking_metrics(queries, proto.query_labels, gallery, proto.gallery_labels, k=k)
    return ProtocolMetrics(m.k, m.precision_at_1, m.precision_at_k, m.map_at_k, m.map_at_r, gallery.shape[1], speed)


# ----------------------------------------------------------------------------------------
# Comparing systems
# ----------------------------------------------------------------------------------------


def compare(
    evaluations: Sequence[Evaluation] | Mapping[str, Evaluation], n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """One row per system: every aggregated metric with its bootstrap interval.

    Columns are a MultiIndex ``(metric, mean|low|high)``; ``table.xs("mean", axis=1,
    level=1)`` gives the plain means.
    """
    items = evaluations.items() if isinstance(evaluations, Mapping) else [(e.name, e) for e in evaluations]
    rows = {name: ev.summary(n_boot, ci, seed).stack() for name, ev in items}
    table = pd.DataFrame(rows).T
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", "stat"])
    table.index.name = "system"
    return table


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``b − a`` for one per-query metric, with its bootstrap interval ``[low, high]``."""

    metric: str
    a: str
    b: str
    difference: float
    low: float
    high: float


def paired_difference(
    a: Evaluation, b: Evaluation, metric: str = "ap", n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Mean of ``b − a`` for one per-query metric on the same queries, with a bootstrap interval.

    Pairing by query removes the query-difficulty variance both systems share, so the
    interval is much narrower than comparing two independent intervals.
    """
    col_a = f"{metric}@{a.k}" if "@" not in metric else metric
    col_b = f"{metric}@{b.k}" if "@" not in metric else metric
    if not np.array_equal(a.per_query["query_id"].to_numpy(), b.per_query["query_id"].to_numpy()):
        raise ValueError("paired_difference needs both evaluations on the same queries in the same order")
    diff = b.per_query[col_b].to_numpy() - a.per_query[col_a].to_numpy()
    mean, lo, hi = bootstrap_ci(diff, n_boot, ci, seed)
    return PairedDifference(col_b, a.name, b.name, float(mean), float(lo), float(hi))


# ----------------------------------------------------------------------------------------
# The course protocol
# ----------------------------------------------------------------------------------------


@dataclass
class EvaluationProtocol:
    """Queries and gallery with their ids and labels (images uint8 ``(n, 28, 28)``)."""

    query_images: np.ndarray
    query_labels: np.ndarray
    query_ids: np.ndarray
    gallery_images: np.ndarray
    gallery_labels: np.ndarray
    gallery_ids: np.ndarray
    class_names: list[str]


def default_protocol(
    dataset: FashionMNIST | None = None, n_queries: int | None = None, n_gallery: int | None = None, seed: int = 0
) -> EvaluationProtocol:
    """Test images as queries, training images as gallery (optionally seeded subsamples)."""
    if dataset is None:
        from . import data

        dataset = data.load_fashion_mnist()
    rng = np.random.default_rng(seed)
    q_idx = np.arange(len(dataset.test_images))
    g_idx = np.arange(len(dataset.train_images))
    if n_queries is not None and n_queries < len(q_idx):
        q_idx = np.sort(rng.choice(q_idx, n_queries, replace=False))
    if n_gallery is not None and n_gallery < len(g_idx):
        g_idx = np.sort(rng.choice(g_idx, n_gallery, replace=False))
    n_train = len(dataset.train_images)
    test_labels, train_labels = np.asarray(dataset.test_labels), np.asarray(dataset.train_labels)
    return EvaluationProtocol(
        dataset.test_images[q_idx],
        test_labels[q_idx],
        q_idx + n_train,
        dataset.train_images[g_idx],
        train_labels[g_idx],
        g_idx,
        list(dataset.class_names),
    )


def profile_protocol(profile: str, dataset: FashionMNIST | None = None, seed: int = 0) -> EvaluationProtocol:
    """The protocol of a profile: full = every test and training image; smoke = a seeded sample
    (:data:`SMOKE_QUERIES` test queries, :data:`SMOKE_GALLERY` training images).  Notebooks 03
    and 06 both use it, so they report the same figures for the same model."""
    if profile not in config.PROFILES:
        raise ValueError(f"profile must be one of {config.PROFILES}, got {profile!r}")
    if profile == "full":
        return default_protocol(dataset, seed=seed)
    return default_protocol(dataset, n_queries=SMOKE_QUERIES, n_gallery=SMOKE_GALLERY, seed=seed)


def saved_models(models_dir: str | Path | None = None) -> dict[str, Path]:
    """Encoders saved in ``config.models_dir()``: ``{file stem: path}`` for every ``*.pt``."""
    folder = Path(models_dir) if models_dir is not None else config.models_dir()
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def evaluate_systems(
    protocol: EvaluationProtocol,
    encoders: Mapping[str, Encoder],
    k: int = 10,
    progress: bool = False,
    cache: bool = False,
) -> dict[str, Evaluation]:
    """:func:`evaluate_encoder` for each named encoder on one protocol."""
    p = protocol
    return {
        name: evaluate_encoder(
            enc,
            p.query_images,
            p.query_labels,
            p.gallery_images,
            p.gallery_labels,
            name=name,
            k=k,
            query_ids=p.query_ids,
            gallery_ids=p.gallery_ids,
            class_names=p.class_names,
            progress=progress,
            cache=cache,
        )
        for name, enc in encoders.items()
    }


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``compare`` output as readable strings ``mean [low, high]``."""
    names = table.columns.get_level_values(0).unique()
    d = digits
    cells = {
        m: [f"{r[(m, 'mean')]:.{d}f} [{r[(m, 'low')]:.{d}f}, {r[(m, 'high')]:.{d}f}]" for _, r in table.iterrows()]
        for m in names
    }
    return pd.DataFrame(cells, index=table.index)


# ----------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        nargs="*",
        type=Path,
        default=None,
        help="encoder files to evaluate (default: every *.pt in the models folder)",
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=["pixels"],
        help="baseline encoders to include (pixels, pca, untrained, efficientnet)",
    )
    parser.add_argument("-k", "--k", type=int, default=10, help="cut-off of every metric (default 10)")
    parser.add_argument("--queries", type=int, default=None, help="subsample this many test queries (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", action="store_true", help="also print the per-class mAP table")
    parser.add_argument("--json", type=Path, default=None, help="write the comparison table as JSON here")


def cli_main(args: argparse.Namespace) -> int:
    from . import data, models

    ds = data.load_fashion_mnist()
    proto = default_protocol(ds, n_queries=args.queries, seed=args.seed)
    paths = {p.stem: p for p in args.models} if args.models is not None else saved_models()
    missing = [str(p) for p in paths.values() if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no encoder file at {', '.join(missing)}")
    encoders: dict[str, Encoder] = {}
    for name in args.baselines:
        encoders[f"baseline:{name}"] = models.baseline_encoder(name, train_images=ds.train_images)
    for name, path in paths.items():
        encoders[name] = models.load_encoder(path)
    if not encoders:
        print(f"nothing to evaluate: no *.pt in {config.models_dir()} and no baselines asked for")
        return 1
    print(
        f"queries: {len(proto.query_ids):,} test images; gallery: {len(proto.gallery_ids):,} training images; k={args.k}"
    )
    evals = evaluate_systems(proto, encoders, k=args.k, progress=True)
    table = compare(evals, seed=args.seed)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(format_table(table))
        if args.per_class:
            print(pd.DataFrame({n: e.per_class()[f"mAP@{args.k}"] for n, e in evals.items()}).round(3))
    if args.json:
        stats = ("mean", "low", "high")
        names = table.columns.get_level_values(0).unique()
        out = {sys: {m: {s: float(table.loc[sys, (m, s)]) for s in stats} for m in names} for sys in table.index}
        config.write_json_atomic(args.json, out)
        print(f"wrote {args.json}")
    return 0
