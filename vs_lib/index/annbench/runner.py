"""Run a sweep: build (or load) every index of a grid, score recall, time single queries.

:func:`run_sweep` follows ann-benchmarks' protocol (:mod:`.protocol`) with the changes a
shared 2-core machine forces, each recorded in the report's ``protocol`` block:

- **one thread** for every query: BLAS and OpenMP (FAISS) through ``threadpoolctl``, numba
  for pynndescent, each library's own thread argument (hnswlib, usearch, ScaNN, Annoy) —
  all restored when the sweep ends.  Builds may use ``build_threads`` (recorded per build;
  ann-benchmarks builds on one CPU);
- **alternating rounds**: recall is scored on ``recall_queries`` test images (all 10,000 by
  default), but QPS on a fixed set of ``timing_queries`` of them, in ``rounds`` rounds.
  Every round times each setting of a group in turn (reversed on odd rounds) and a
  brute-force anchor (FAISS's exact scan), so load from other processes hits them alike;
  QPS is the median over rounds, ratios are medians of per-round ratios;
- **CPU time beside wall time**: ``time.thread_time`` over the same calls estimates what a
  dedicated core would do (waiting for a core is left out; cache and memory contention
  stay in).  ann-benchmarks reports 1 / (best of 5 runs of the mean wall time per query).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .algorithms import Algorithm, VsLibKind, make_algorithm, version_of
from .cache import BuildCache, BuildRecord
from .grids import GRIDS, Entry
from .protocol import EPSILON, TARGETS, GroundTruth, Task, ground_truth, id_recall, knn_recall
from .summary import SweepReport, summarise

__all__ = ["SettingResult", "run_sweep", "single_thread"]


@dataclass
class SettingResult:
    """One algorithm at one query setting: recall, and QPS per round (wall and CPU).

    ``ratio_to_bf`` / ``ratio_to_bf_cpu``: median over rounds of (this QPS / the brute-force
    anchor's QPS in the same round); ``single_equals_batch``: share of checked queries whose
    one-query call returned the same ids as the recall pass's batch call."""

    algorithm: str
    build: dict[str, Any]
    setting: Any
    group: str
    build_key: str
    recall: float
    id_recall: float
    recall_queries: int
    timed_queries: int
    single_equals_batch: float
    qps_rounds: list[float] = field(default_factory=list)
    qps_cpu_rounds: list[float] = field(default_factory=list)
    ratio_rounds: list[float] = field(default_factory=list)
    ratio_cpu_rounds: list[float] = field(default_factory=list)

    @property
    def qps(self) -> float:
        return float(np.median(self.qps_rounds))

    @property
    def qps_cpu(self) -> float:
        return float(np.median(self.qps_cpu_rounds))

    @property
    def ratio_to_bf(self) -> float:
        return float(np.median(self.ratio_rounds))

    @property
    def ratio_to_bf_cpu(self) -> float:
        return float(np.median(self.ratio_cpu_rounds))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One thread for BLAS, OpenMP (FAISS) and numba inside the block; restored after it."""
    from threadpoolctl import threadpool_limits

    numba: Any = None
    with contextlib.suppress(ImportError):
        import numba as _numba

        numba = _numba
    before = numba.get_num_threads() if numba is not None else None
    with threadpool_limits(1):
        if numba is not None:
            numba.set_num_threads(1)
        try:
            yield
        finally:
            if numba is not None:
                numba.set_num_threads(before)


def _time_calls(fn: Callable[[np.ndarray, int], Any], queries: np.ndarray, k: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call, one query per call; wall sums the calls alone."""
    wall = 0.0
    c0 = time.thread_time()
    for v in queries:
        t0 = time.perf_counter()
        fn(v, k)
        wall += time.perf_counter() - t0
    return wall / len(queries), max(time.thread_time() - c0, 1e-9) / len(queries)


class _Sweep:
    """The state of one run (see :func:`run_sweep`)."""

    def __init__(self, task: Task, cache: BuildCache, *, log: Callable[[str], None], build_threads: int):
        self.task, self.cache, self.log, self.build_threads = task, cache, log, build_threads
        self.builds: list[BuildRecord] = []
        self.results: list[SettingResult] = []
        self.failures: list[dict[str, Any]] = []

    def build(self, entry: Entry) -> tuple[Algorithm, BuildRecord]:
        from threadpoolctl import threadpool_limits

        algorithm = make_algorithm(entry.algorithm, entry.build, build_threads=self.build_threads)
        with threadpool_limits(self.build_threads):
            record = self.cache.get(algorithm, self.task.train, self.task.signature)
        self.builds.append(record)
        how = f"loaded in {record.load_seconds:.1f}s (built in" if record.cached else "built in"
        self.log(f"  {algorithm.name} {entry.build}: {how} {record.build_seconds:.1f}s{')' if record.cached else ''}")
        return algorithm, record

    def recall(self, algo: Algorithm, setting: Any, queries: np.ndarray, true_distances: np.ndarray,
               true_neighbors: np.ndarray) -> tuple[float, float, float]:  # fmt: skip
        """(k-nn recall, id recall, single-equals-batch share) of ``algo`` at ``setting``."""
        k = self.task.k
        algo.set_query(setting)
        found = algo.batch(queries, k)
        knn = knn_recall(self.task.train, queries, true_distances, found, k, EPSILON)
        ids = id_recall(true_neighbors, found, k)
        check = np.linspace(0, len(queries) - 1, min(20, len(queries))).astype(int)
        same = [
            set(np.asarray(algo.query(queries[i], k)).tolist()) == set(found[i][found[i] >= 0].tolist()) for i in check
        ]
        return knn, ids, float(np.mean(same))

    def score(self, entry: Entry, algo: Algorithm, record: BuildRecord, truth: GroundTruth, n_recall: int,
              n_timing: int) -> list[tuple[Algorithm, Any, SettingResult]]:  # fmt: skip
        """Recall of every setting of ``entry`` (the algorithm and its raw views), ready to be timed."""
        nr = min(n_recall, entry.recall_queries or n_recall)
        nt = min(n_timing, entry.timing_queries or n_timing)
        test = self.task.test[:nr]
        items = []
        for view in [algo, *algo.views()]:
            for setting in entry.settings:
                knn, ids, same = self.recall(view, setting, test, truth.distances[:nr], truth.neighbors[:nr])
                res = SettingResult(view.name, entry.build, setting, entry.group, record.key, knn, ids, nr, nt, same)
                items.append((view, setting, res))
                self.log(f"  {view.name} {entry.build} {setting}: recall {knn:.4f}")
        return items

    def time_group(self, items: list[tuple[Algorithm, Any, SettingResult]], anchor: Algorithm,
                   timing: np.ndarray, anchor_queries: np.ndarray, rounds: int) -> None:  # fmt: skip
        """Alternating rounds over ``items`` (+ the anchor each round); fills the results' rounds."""
        k = self.task.k
        for r in range(rounds):
            a_wall, a_cpu = _time_calls(anchor.query, anchor_queries, k)
            for i in range(len(items)) if r % 2 == 0 else reversed(range(len(items))):
                algo, setting, res = items[i]
                algo.set_query(setting)
                algo.query(timing[0], k)  # warm-up after the knob changed
                wall, cpu = _time_calls(algo.query, timing[: res.timed_queries], k)
                res.qps_rounds.append(1 / wall)
                res.qps_cpu_rounds.append(1 / cpu)
                res.ratio_rounds.append(a_wall / wall)
                res.ratio_cpu_rounds.append(a_cpu / cpu)
            self.log(f"  round {r + 1}/{rounds} done")


def run_sweep(
    task: Task,
    grid: str | list[Entry] = "quick",
    *,
    cache_dir: Path | None = None,
    algorithms: set[str] | None = None,
    recall_queries: int | None = None,
    timing_queries: int = 300,
    anchor_queries: int = 20,
    rounds: int = 5,
    build_threads: int = 2,
    progress: bool = True,
    label: str | None = None,
) -> SweepReport:
    """The sweep of ``grid`` (a name of :data:`~.grids.GRIDS` or a list of entries) on ``task``.

    ``cache_dir``: where builds are cached (``None``: build everything, cache nothing);
    ``algorithms``: keep only these names (``"hnswlib"``, ``"vs_lib-hnsw"``, raw views such as
    ``"faiss-hnsw"`` come with their vs_lib kind); ``recall_queries``: test images scored for
    recall (default: all); ``timing_queries`` single queries timed per setting and round.
    """
    from .. import faiss_index

    def log(msg: str) -> None:
        if progress:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    entries = list(GRIDS[grid] if isinstance(grid, str) else grid)
    if algorithms is not None:
        entries = [e for e in entries if _entry_names(e) & algorithms or e.build.get("kind") == "flat"]
    t_start, load_start = time.perf_counter(), os.getloadavg()
    cache = BuildCache(cache_dir)
    sweep = _Sweep(task, cache, log=log, build_threads=build_threads)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(build_threads):
        truth = ground_truth(task, cache_dir=cache_dir)
    log(f"ground truth: {truth.neighbors.shape} in {truth.seconds:.1f}s")
    n_recall = min(recall_queries or len(task.test), len(task.test))
    timing_idx = np.linspace(0, len(task.test) - 1, min(timing_queries, len(task.test))).astype(int)
    timing = np.ascontiguousarray(task.test[timing_idx])
    with single_thread(), faiss_index.faiss_threads(1):
        anchor_entry = next(
            (e for e in entries if e.build.get("kind") == "flat"), Entry("vs_lib", {"kind": "flat"}, (None,), "exact")
        )
        flat, _ = sweep.build(anchor_entry)
        anchor = flat.views()[0]  # FAISS's exact scan, raw: the yardstick of every round
        for group in dict.fromkeys(e.group for e in entries):
            log(f"== group {group}")
            items: list[tuple[Algorithm, Any, SettingResult]] = []
            for entry in (e for e in entries if e.group == group):
                try:
                    built = (flat, sweep.builds[0]) if entry is anchor_entry else sweep.build(entry)
                    items += sweep.score(entry, *built, truth, n_recall, len(timing))
                except Exception as e:  # one library failing must not lose an hour of measurements
                    sweep.failures.append({"algorithm": _entry_label(entry), "build": entry.build, "error": repr(e)})
                    log(f"  {_entry_label(entry)} {entry.build} FAILED: {e!r}")
            sweep.time_group(items, anchor, timing, timing[:anchor_queries], rounds)
            sweep.results.extend(res for _, _, res in items)
            for _, _, res in items:
                log(
                    f"  {res.algorithm} {res.setting}: recall {res.recall:.4f} QPS {res.qps:,.0f} (CPU {res.qps_cpu:,.0f})"
                )
            del items
    protocol = _protocol(task, grid, n_recall, len(timing), anchor_queries, rounds, build_threads)
    machine = _machine(load_start)
    libs = ("numpy", "faiss-cpu", "hnswlib", "usearch", "annoy", "scann", "pynndescent", "numba", "scikit-learn")
    versions = {lib: version_of(lib) for lib in libs}
    return summarise(
        sweep.results,
        sweep.builds,
        protocol=protocol,
        machine=machine,
        versions=versions,
        targets=TARGETS,
        seconds=time.perf_counter() - t_start,
        label=label,
        failures=sweep.failures,
    )


def _protocol(
    task: Task,
    grid: str | list[Entry],
    n_recall: int,
    n_timing: int,
    anchor_queries: int,
    rounds: int,
    build_threads: int,
) -> dict[str, Any]:
    """How the sweep measured (JSON-able), stored beside its results."""
    return {
        "task": task.name,
        "gallery": len(task.train),
        "queries": len(task.test),
        "dim": int(task.train.shape[1]),
        "k": task.k,
        "recall": f"ann-benchmarks k-nn recall: recomputed distance <= true {task.k}th distance + {EPSILON}",
        "recall_queries": n_recall,
        "timing_queries": n_timing,
        "anchor": "FAISS exact scan (IndexFlatL2), single queries",
        "anchor_queries": min(anchor_queries, n_timing),
        "rounds": rounds,
        "query_threads": 1,
        "build_threads": build_threads,
        "grid": grid if isinstance(grid, str) else "custom",
        "ground_truth": "exact_topk candidates, distances recomputed in float64, 100 per query",
    }


def _machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The machine the sweep ran on (JSON-able), with its load at the start and the end."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "simd": _simd(),
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def _cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _simd() -> str:
    """The widest x86 vector extension the CPU reports (libraries pick their kernels by it)."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo().splitlines() if line.startswith("flags")), [])
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return "unknown"


def _entry_label(entry: Entry) -> str:
    return f"vs_lib-{entry.build['kind']}" if entry.algorithm == "vs_lib" else entry.algorithm


def _entry_names(entry: Entry) -> set[str]:
    """The names an entry's results carry: its own, and its raw library view's."""
    if entry.algorithm != "vs_lib":
        return {entry.algorithm}
    raw = VsLibKind.RAW.get(entry.build["kind"])
    return {f"vs_lib-{entry.build['kind']}", *([raw] if raw else [])}
