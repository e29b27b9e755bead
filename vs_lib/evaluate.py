"""Offline evaluation: rank a gallery for every query, score each ranked list, aggregate.

The protocol the course uses (``default_protocol``): the 10,000 Fashion-MNIST **test**
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

Exact top-k search is a chunked matrix product in torch (the embeddings are
L2-normalised, so the inner product is the cosine similarity); 10,000 × 60,000 takes
seconds, see ``benchmarks/evaluate.py``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import config, metrics

CLI_HELP = "offline evaluation of saved encoders on the test set"

METRICS = ("precision", "recall", "hit", "rr", "ap", "ndcg")
#: how each per-query column is called once averaged over queries
AGGREGATE_NAMES = {"precision": "P", "recall": "R", "hit": "HitRate", "rr": "MRR", "ap": "mAP", "ndcg": "nDCG"}


def metric_columns(k: int) -> list[str]:
    return [f"{m}@{k}" for m in METRICS]


# ----------------------------------------------------------------------------------------
# Exact top-k search
# ----------------------------------------------------------------------------------------


def _as_float32_2d(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a (n, d) array of embeddings, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be floating point embeddings, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def exact_topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    query_ids: Sequence[int] | None = None,
    gallery_ids: Sequence[int] | None = None,
    chunk_size: int = 1024,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` gallery rows by inner product for every query (exact linear scan).

    ``queries`` ``(q, d)``, ``gallery`` ``(n, d)`` float32 (L2-normalised for cosine).
    When both id arrays are given, a query whose id is in the gallery never retrieves
    itself.  Returns ``(scores (q, k) float32, positions (q, k) int64)``: positions are
    row numbers in ``gallery``, best first.
    """
    import torch

    Q = _as_float32_2d(queries, "queries")
    G = _as_float32_2d(gallery, "gallery")
    if Q.shape[1] != G.shape[1]:
        raise ValueError(f"queries have dimension {Q.shape[1]} but the gallery has {G.shape[1]}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    self_pos = np.full(len(Q), -1, dtype=np.int64)
    if query_ids is not None and gallery_ids is not None:
        qid = np.asarray(query_ids, dtype=np.int64)
        gid = np.asarray(gallery_ids, dtype=np.int64)
        if qid.shape != (len(Q),) or gid.shape != (len(G),):
            raise ValueError(f"query_ids must be ({len(Q)},) and gallery_ids ({len(G)},), got {qid.shape} and {gid.shape}")
        self_pos = pd.Index(gid).get_indexer(qid).astype(np.int64)
    k_eff = min(k, len(G) - int((self_pos >= 0).any()))
    if k_eff < k:
        raise ValueError(f"k={k} is larger than the {len(G)} gallery items a query can retrieve")
    scores = np.empty((len(Q), k), dtype=np.float32)
    positions = np.empty((len(Q), k), dtype=np.int64)
    Gt = torch.from_numpy(G)
    starts = range(0, len(Q), chunk_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="exact top-k", unit="chunk")
    with torch.inference_mode():
        for s in starts:
            e = min(s + chunk_size, len(Q))
            sims = torch.from_numpy(Q[s:e]) @ Gt.T
            rows = np.flatnonzero(self_pos[s:e] >= 0)
            if rows.size:
                sims[torch.from_numpy(rows), torch.from_numpy(self_pos[s:e][rows])] = -float("inf")
            top = torch.topk(sims, k, dim=1, largest=True, sorted=True)
            scores[s:e] = top.values.numpy()
            positions[s:e] = top.indices.numpy()
    return scores, positions


# ----------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------


def bootstrap_ci(values, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile bootstrap interval of the mean, resampling rows.

    ``values`` ``(n,)`` or ``(n, m)``; returns ``(mean, low, high)``, each ``()`` or ``(m,)``.
    Resampling uses multinomial counts, so 10,000 rows × 1,000 resamples is one matrix
    product.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v[:, None] if squeeze else v
    n = v.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, v.shape[1]))
    for s in range(0, n_boot, 200):
        e = min(s + 200, n_boot)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=e - s)
        means[s:e] = counts @ v / n
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
    mean = v.mean(axis=0)
    if squeeze:
        return mean[0], lo[0], hi[0]
    return mean, lo, hi


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
    seconds: dict = field(default_factory=dict)  # timing of the stages

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
        table = self.per_query.groupby("class_name", sort=False, observed=True)[self.metric_columns].mean()
        table.columns = [f"{AGGREGATE_NAMES[m]}@{self.k}" for m in METRICS]
        table["queries"] = self.per_query.groupby("class_name", sort=False, observed=True).size()
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


def evaluate_embeddings(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    gallery_embeddings: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    k: int = 10,
    query_ids: Sequence[int] | None = None,
    gallery_ids: Sequence[int] | None = None,
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
    class_names = list(class_names or (metrics.FASHION_MNIST_CLASSES if n_classes == 10 else map(str, range(n_classes))))
    ql = np.asarray(query_labels, dtype=np.int64)
    gl = np.asarray(gallery_labels, dtype=np.int64)
    if ql.shape != (len(query_embeddings),) or gl.shape != (len(gallery_embeddings),):
        raise ValueError(f"need one label per embedding: queries {len(query_embeddings)} vs {ql.shape}, "
                         f"gallery {len(gallery_embeddings)} vs {gl.shape}")
    given_ids = query_ids is not None and gallery_ids is not None
    qid = np.asarray(query_ids if query_ids is not None else np.arange(len(ql)), dtype=np.int64)
    gid = np.asarray(gallery_ids if gallery_ids is not None else np.arange(len(gl)), dtype=np.int64)

    t0 = time.perf_counter()
    scores, pos = exact_topk(query_embeddings, gallery_embeddings, k,
                             qid if given_ids else None, gid if given_ids else None, chunk_size, progress)
    t1 = time.perf_counter()

    result_labels = gl[pos]
    graded = metrics.graded_relevance(ql, result_labels, grades)
    binary = (result_labels == ql[:, None]).astype(np.int8)

    # what the gallery holds for each query: same-class count and the best k grades
    in_gallery = pd.Index(gid).get_indexer(qid) >= 0 if given_ids else np.zeros(len(ql), bool)
    class_counts = np.bincount(gl, minlength=n_classes)
    n_relevant = class_counts[ql] - in_gallery.astype(np.int64)
    ideal = np.empty((len(ql), k))
    for c in np.unique(ql):
        for inside in (False, True):
            rows = (ql == c) & (in_gallery == inside)
            if not rows.any():
                continue
            counts = class_counts.copy()
            counts[c] -= int(inside)
            ideal[rows] = np.sort(np.repeat(grades[c], counts))[::-1][:k]

    per_query = pd.DataFrame({
        "query_id": qid,
        "label": ql,
        "class_name": pd.Categorical([class_names[c] for c in ql], categories=class_names),
        "n_relevant": n_relevant,
        f"precision@{k}": metrics.precision_at_k_batch(binary, k),
        f"recall@{k}": metrics.recall_at_k_batch(binary, k, n_relevant),
        f"hit@{k}": binary.any(axis=1).astype(np.float64),
        f"rr@{k}": metrics.reciprocal_rank_batch(binary),
        f"ap@{k}": metrics.average_precision_batch(binary, np.minimum(n_relevant, k)),
        f"ndcg@{k}": metrics.ndcg_at_k_batch(graded, k, ideal=ideal),
    })
    t2 = time.perf_counter()
    return Evaluation(name=name, k=k, per_query=per_query, result_ids=gid[pos], result_labels=result_labels,
                      result_scores=scores, seconds={"search": t1 - t0, "metrics": t2 - t1})


def evaluate_encoder(encoder, query_images, query_labels, gallery_images, gallery_labels, *,
                     batch_size: int = 512, name: str | None = None, cache: bool = False, **kwargs) -> Evaluation:
    """Embed queries and gallery with ``encoder.embed`` then :func:`evaluate_embeddings`.

    ``cache=True`` keeps the embeddings on disk (:func:`cached_embed`).
    """
    t0 = time.perf_counter()
    embed = (lambda x: cached_embed(encoder, x, batch_size)) if cache else (lambda x: encoder.embed(x, batch_size=batch_size))
    g = embed(gallery_images)
    q = embed(query_images)
    t1 = time.perf_counter()
    if name is None:
        name = getattr(encoder, "name", None) or getattr(encoder, "metadata", {}).get("name", type(encoder).__name__)
    ev = evaluate_embeddings(q, query_labels, g, gallery_labels, name=name, **kwargs)
    ev.seconds["embed"] = t1 - t0
    return ev


def embeddings_cache_dir() -> Path:
    """Where :func:`cached_embed` keeps embeddings (``data/embeddings``)."""
    return config.data_dir() / "embeddings"


def cached_embed(encoder, images: np.ndarray, batch_size: int = 512, progress: bool = False) -> np.ndarray:
    """``encoder.embed(images)``, kept on disk under the encoder's fingerprint and the images' hash.

    Notebooks 05, 06 and 07 embed the same corpus with the same encoders; the first pays,
    the others read a ``.npy``.  A changed model or image set changes the key, so a stale
    file is never read.  Written atomically.
    """
    import hashlib

    arr = np.ascontiguousarray(images)
    h = hashlib.sha256(arr.tobytes())
    h.update(str((arr.shape, arr.dtype.str)).encode())
    fingerprint = getattr(encoder, "fingerprint", None)
    if not fingerprint:
        return encoder.embed(arr, batch_size=batch_size)
    path = embeddings_cache_dir() / f"{fingerprint}-{h.hexdigest()[:16]}.npy"
    if path.exists():
        try:
            out = np.load(path)
            if out.shape[0] == len(arr):
                return out
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    try:
        out = encoder.embed(arr, batch_size=batch_size, progress=progress)
    except TypeError:  # an encoder without a progress option
        out = encoder.embed(arr, batch_size=batch_size)
    with config.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out)
    return out


# ----------------------------------------------------------------------------------------
# Comparing systems
# ----------------------------------------------------------------------------------------


def compare(evaluations: Sequence[Evaluation] | Mapping[str, Evaluation], n_boot: int = 1000,
            ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per system: every aggregated metric with its bootstrap interval.

    Columns are a MultiIndex ``(metric, mean|low|high)``; ``table.xs("mean", axis=1,
    level=1)`` gives the plain means.
    """
    items = evaluations.items() if isinstance(evaluations, Mapping) else [(e.name, e) for e in evaluations]
    rows = {}
    for name, ev in items:
        s = ev.summary(n_boot, ci, seed)
        rows[name] = s.stack()
    table = pd.DataFrame(rows).T
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", "stat"])
    table.index.name = "system"
    return table


def paired_difference(a: Evaluation, b: Evaluation, metric: str = "ap", n_boot: int = 1000,
                      ci: float = 0.95, seed: int = 0) -> dict:
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
    return {"metric": col_b, "a": a.name, "b": b.name, "difference": float(mean), "low": float(lo), "high": float(hi)}


def plot_failures(ev: Evaluation, images_by_id, n: int = 6, by: str | None = None, class_names=None):
    """The failure gallery: the worst queries, each followed by its top k (green = same class)."""
    from . import viz

    names = list(class_names or metrics.FASHION_MNIST_CLASSES)
    worst = ev.failures(n, by)
    q_imgs = [images_by_id[int(i)] for i in worst["query_id"]]
    res_imgs = [[images_by_id[int(i)] for i in ids] for ids in worst["result_ids"]]
    rel = [[lab == q for lab in labs] for q, labs in zip(worst["label"], worst["result_labels"])]
    row_titles = [f"{names[q]}\nAP {a:.2f}" for q, a in zip(worst["label"], worst[by or f"ap@{ev.k}"])]
    res_titles = [[names[lab][:9] for lab in labs] for labs in worst["result_labels"]]
    return viz.ranked_rows(q_imgs, res_imgs, relevant=rel, row_titles=row_titles, result_titles=res_titles)


# ----------------------------------------------------------------------------------------
# The course protocol and the command line
# ----------------------------------------------------------------------------------------


@dataclass
class Protocol:
    """Queries and gallery with their ids and labels (images uint8 ``(n, 28, 28)``)."""

    query_images: np.ndarray
    query_labels: np.ndarray
    query_ids: np.ndarray
    gallery_images: np.ndarray
    gallery_labels: np.ndarray
    gallery_ids: np.ndarray
    class_names: list


def default_protocol(dataset=None, n_queries: int | None = None, n_gallery: int | None = None,
                     seed: int = 0) -> Protocol:
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
    return Protocol(dataset.test_images[q_idx], np.asarray(dataset.test_labels)[q_idx], q_idx + n_train,
                    dataset.train_images[g_idx], np.asarray(dataset.train_labels)[g_idx], g_idx,
                    list(dataset.class_names))


def saved_models(models_dir: str | Path | None = None) -> dict[str, Path]:
    """Encoders saved in ``config.models_dir()``: ``{file stem: path}`` for every ``*.pt``."""
    folder = Path(models_dir) if models_dir is not None else config.models_dir()
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def evaluate_systems(protocol: Protocol, encoders: Mapping[str, object], k: int = 10,
                     progress: bool = False, cache: bool = False) -> dict[str, Evaluation]:
    """:func:`evaluate_encoder` for each named encoder on one protocol."""
    out = {}
    for name, enc in encoders.items():
        out[name] = evaluate_encoder(enc, protocol.query_images, protocol.query_labels, protocol.gallery_images,
                                     protocol.gallery_labels, name=name, k=k, query_ids=protocol.query_ids,
                                     gallery_ids=protocol.gallery_ids, class_names=protocol.class_names,
                                     progress=progress, cache=cache)
    return out


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``compare`` output as readable strings ``mean [low, high]``."""
    metrics_ = table.columns.get_level_values(0).unique()
    return pd.DataFrame({
        m: [f"{r[(m, 'mean')]:.{digits}f} [{r[(m, 'low')]:.{digits}f}, {r[(m, 'high')]:.{digits}f}]"
            for _, r in table.iterrows()] for m in metrics_
    }, index=table.index)


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="*", type=Path, default=None,
                        help="encoder files to evaluate (default: every *.pt in the models folder)")
    parser.add_argument("--baselines", nargs="*", default=["pixels"],
                        help="baseline encoders to include (pixels, pca, untrained, efficientnet)")
    parser.add_argument("-k", "--k", type=int, default=10, help="cut-off of every metric (default 10)")
    parser.add_argument("--queries", type=int, default=None, help="subsample this many test queries (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", action="store_true", help="also print the per-class mAP table")
    parser.add_argument("--json", type=Path, default=None, help="write the comparison table as JSON here")


def cli_main(args) -> int:
    from . import data, models

    ds = data.load_fashion_mnist()
    proto = default_protocol(ds, n_queries=args.queries, seed=args.seed)
    paths = {p.stem: p for p in args.models} if args.models is not None else saved_models()
    missing = [str(p) for p in paths.values() if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no encoder file at {', '.join(missing)}")
    encoders = {}
    for name in args.baselines:
        encoders[f"baseline:{name}"] = models.baseline_encoder(name, train_images=ds.train_images)
    for name, path in paths.items():
        encoders[name] = models.load_encoder(path)
    if not encoders:
        print(f"nothing to evaluate: no *.pt in {config.models_dir()} and no baselines asked for")
        return 1
    print(f"queries: {len(proto.query_ids):,} test images; gallery: {len(proto.gallery_ids):,} training images; k={args.k}")
    evals = evaluate_systems(proto, encoders, k=args.k, progress=True)
    table = compare(evals, seed=args.seed)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(format_table(table))
        if args.per_class:
            print(pd.DataFrame({n: e.per_class()[f"mAP@{args.k}"] for n, e in evals.items()}).round(3))
    if args.json:
        out = {name: {m: {s: float(table.loc[name, (m, s)]) for s in ("mean", "low", "high")}
                      for m in table.columns.get_level_values(0).unique()} for name in table.index}
        config.write_json_atomic(args.json, out)
        print(f"wrote {args.json}")
    return 0
