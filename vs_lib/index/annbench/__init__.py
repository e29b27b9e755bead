"""The field's own benchmark, reproduced: ann-benchmarks' ``fashion-mnist-784-euclidean`` task.

``run_sweep(fashion_mnist_784(), "quick")`` builds (or loads from the cache) every index of a
grid — brute force (NumPy, FAISS), FAISS IVF and HNSW, hnswlib, usearch, Annoy, ScaNN,
pynndescent and vs_lib's own kinds through :func:`vs_lib.index.create` — scores each query
setting with ann-benchmarks' k-nn recall, times single queries on one thread in
alternating rounds, and returns a :class:`SweepReport` (frontiers, QPS at recall 0.90 /
0.95 / 0.99 with ratios to brute force, same-round ratios, the published figures beside
them).  ``benchmarks/ann.py --task fashion-mnist-784`` prints it as JSON.

=============  ===========================================================================
module         what it holds
=============  ===========================================================================
protocol       the task, ground truth, k-nn recall, Pareto frontier, best QPS at a recall
algorithms     one adapter per library, the way ann-benchmarks drives it
grids          the parameter sweeps (``full``, ``quick``, ``smoke``)
cache          index builds cached under ``config.data_dir()/cache/ann`` (atomic writes)
runner         the sweep: builds, recall pass, alternating timing rounds
summary        frontiers, QPS at target recalls, same-round ratios, the published comparison
published      ann-benchmarks' published figures for this task (read off its plots)
=============  ===========================================================================
"""

from .cache import BuildCache, BuildRecord, default_cache_dir
from .grids import GRIDS, Entry
from .protocol import (
    EPSILON,
    TARGETS,
    GroundTruth,
    Task,
    best_at_recall,
    fashion_mnist_784,
    ground_truth,
    id_recall,
    knn_recall,
    pareto_frontier,
)
from .published import PUBLISHED, PublishedRun, published_qps
from .runner import SettingResult, run_sweep, single_thread
from .summary import PairRatio, SweepReport, summarise

__all__ = [
    "EPSILON",
    "GRIDS",
    "PUBLISHED",
    "TARGETS",
    "BuildCache",
    "BuildRecord",
    "Entry",
    "GroundTruth",
    "PairRatio",
    "PublishedRun",
    "SettingResult",
    "SweepReport",
    "Task",
    "best_at_recall",
    "default_cache_dir",
    "fashion_mnist_784",
    "ground_truth",
    "id_recall",
    "knn_recall",
    "pareto_frontier",
    "published_qps",
    "run_sweep",
    "single_thread",
    "summarise",
]
