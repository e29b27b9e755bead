"""What a sweep found: frontiers, QPS at target recalls, same-round ratios, the published comparison.

Everything here is computed from the per-setting results of one run (:mod:`.runner`):

- ``algorithms[name]``: the recall–QPS frontier (CPU-time QPS, and wall-time QPS) and, at
  each target recall, the fastest setting reaching it with its ratio to brute force;
- ``pairs``: same-round QPS ratios at a target recall between two algorithms timed in the
  same rounds — vs_lib's ``hnsw`` kind against hnswlib at equal build parameters (the
  figure to watch: at least 1.0 means vs_lib's HNSW is at least as fast), and each vs_lib
  kind against the raw library call on the very same index (what the interface costs);
- ``published``: this run beside the published ann-benchmarks figures, as ratios to hnswlib
  and as an ordering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .cache import BuildRecord
from .protocol import best_at_recall, pareto_frontier
from .published import PUBLISHED, published_qps

__all__ = ["PairRatio", "SweepReport", "summarise"]


@dataclass(frozen=True)
class PairRatio:
    """``ours`` : ``peer`` single-query QPS at ``target`` recall, each at its fastest setting
    reaching it: medians over the shared rounds of the per-round ratios (CPU and wall)."""

    ours: str
    peer: str
    target: float
    ours_setting: Any
    peer_setting: Any
    ours_recall: float
    peer_recall: float
    ours_qps_cpu: float
    peer_qps_cpu: float
    ratio_cpu: float
    ratio_wall: float
    ratio_cpu_rounds: list[float]
    build: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepReport:
    """A whole run, ready for JSON (:meth:`to_json`)."""

    label: str | None
    protocol: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, str]
    seconds: float
    builds: list[dict[str, Any]]
    results: list[dict[str, Any]]
    algorithms: dict[str, dict[str, Any]]
    pairs: dict[str, Any]
    published: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)  # entries that could not run, and why

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=_default, allow_nan=False)

    def at(self, algorithm: str, target: float, clock: str = "cpu") -> dict[str, Any] | None:
        """The fastest setting of ``algorithm`` reaching ``target`` recall (``clock``: "cpu" or "wall")."""
        return self.algorithms.get(algorithm, {}).get(f"at_recall_{clock}", {}).get(f"{target:.2f}")


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _row(r: Any) -> dict[str, Any]:
    return {
        **{k: v for k, v in vars(r).items()},
        "qps": r.qps,
        "qps_cpu": r.qps_cpu,
        "ratio_to_bf": r.ratio_to_bf,
        "ratio_to_bf_cpu": r.ratio_to_bf_cpu,
    }


def _point(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("recall", "qps_cpu", "qps", "ratio_to_bf_cpu", "ratio_to_bf", "build", "setting")
    return {k: row[k] for k in keys}


def _algorithm_summary(rows: list[dict[str, Any]], targets: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "frontier_cpu": [_point(p) for p in pareto_frontier(rows, "qps_cpu")],
        "frontier_wall": [_point(p) for p in pareto_frontier(rows, "qps")],
        "at_recall_cpu": {},
        "at_recall_wall": {},
    }
    for t in targets:
        best = best_at_recall(rows, t, "qps_cpu")
        out["at_recall_cpu"][f"{t:.2f}"] = None if best is None else _point(best)
        best = best_at_recall(rows, t, "qps")
        out["at_recall_wall"][f"{t:.2f}"] = None if best is None else _point(best)
    return out


def pair_ratio(ours: list[Any], peer: list[Any], target: float) -> PairRatio | None:
    """:class:`PairRatio` of two lists of setting results timed in the same rounds."""
    a = best_at_recall(ours, target, "qps_cpu")
    b = best_at_recall(peer, target, "qps_cpu")
    if a is None or b is None or a.group != b.group:
        return None
    cpu = [x / y for x, y in zip(a.qps_cpu_rounds, b.qps_cpu_rounds, strict=True)]
    wall = [x / y for x, y in zip(a.qps_rounds, b.qps_rounds, strict=True)]
    return PairRatio(
        a.algorithm, b.algorithm, target, a.setting, b.setting, a.recall, b.recall, a.qps_cpu, b.qps_cpu,
        float(np.median(cpu)), float(np.median(wall)), cpu, dict(a.build),
    )  # fmt: skip


def _hnsw_pairs(results: list[Any], targets: Sequence[float]) -> dict[str, Any]:
    """vs_lib hnsw vs hnswlib at equal (M, ef_construction), per target recall."""
    out: dict[str, Any] = {}
    peers = [r for r in results if r.algorithm == "hnswlib"]
    for build in {(r.build["M"], r.build["ef_construction"]) for r in peers}:
        ours = [
            r
            for r in results
            if r.algorithm == "vs_lib-hnsw" and (r.build.get("M"), r.build.get("ef_construction")) == build
        ]
        theirs = [r for r in peers if (r.build["M"], r.build["ef_construction"]) == build]
        for t in targets:
            pr = pair_ratio(ours, theirs, t)
            if pr is not None:
                out[f"M{build[0]}-efC{build[1]}@{t:.2f}"] = asdict(pr)
    return out


def _wrapper_pairs(results: list[Any]) -> dict[str, Any]:
    """Each vs_lib kind against the raw library call on the same index, setting by setting."""
    raw_of = {"vs_lib-flat": "bruteforce-faiss", "vs_lib-ivf": "faiss-ivf", "vs_lib-hnsw": "faiss-hnsw",
              "vs_lib-annoy": "annoy", "vs_lib-scann": "scann"}  # fmt: skip
    out: dict[str, Any] = {}
    for ours_name, raw_name in raw_of.items():
        ratios = []
        for a in (r for r in results if r.algorithm == ours_name):
            b = next((r for r in results if r.algorithm == raw_name and r.build_key == a.build_key
                      and r.setting == a.setting), None)  # fmt: skip
            if b is not None:
                cpu = [x / y for x, y in zip(a.qps_cpu_rounds, b.qps_cpu_rounds, strict=True)]
                ratios.append({"build": a.build, "setting": a.setting, "ratio_cpu": float(np.median(cpu))})
        if ratios:
            out[f"{ours_name}:{raw_name}"] = {
                "median_ratio_cpu": float(np.median([r["ratio_cpu"] for r in ratios])),
                "settings": ratios,
            }
    return out


def _published(algorithms: dict[str, dict[str, Any]], targets: Sequence[float]) -> dict[str, Any]:
    """This run beside the published figures: QPS, ratios to hnswlib, and the orderings.

    The published ordering ranks by the ratio to hnswlib in the algorithm's own run, so that
    Annoy (last published in 2023) can be placed among the 2025 entries."""
    rows: list[dict[str, Any]] = []
    for name, summary in algorithms.items():
        for t in targets:
            ours = summary["at_recall_cpu"][f"{t:.2f}"]
            peer = algorithms.get("hnswlib", {}).get("at_recall_cpu", {}).get(f"{t:.2f}")
            qps, ratio, run = published_qps(name, t)
            rows.append({
                "algorithm": name, "target": t,
                "qps_cpu": ours["qps_cpu"] if ours else None,
                "ratio_to_bf_cpu": ours["ratio_to_bf_cpu"] if ours else None,
                "ratio_to_hnswlib": ours["qps_cpu"] / peer["qps_cpu"] if ours and peer else None,
                "published_qps": qps, "published_ratio_to_hnswlib": ratio,
                "published_run": run.label if run else None,
            })  # fmt: skip
    orderings = {}
    for t in targets:
        both = [r for r in rows if r["target"] == t and r["qps_cpu"] and r["published_ratio_to_hnswlib"]]
        ours = [r["algorithm"] for r in sorted(both, key=lambda r: -float(r["qps_cpu"]))]
        theirs = [r["algorithm"] for r in sorted(both, key=lambda r: -float(r["published_ratio_to_hnswlib"]))]
        flipped = [(a, b) for i, a in enumerate(ours) for b in ours[i + 1 :] if theirs.index(a) > theirs.index(b)]
        orderings[f"{t:.2f}"] = {"ours": ours, "published": theirs, "flipped_pairs": flipped}
    return {
        "runs": [asdict(run) for run in PUBLISHED],
        "rows": rows,
        "orderings": orderings,
        "note": "published QPS were read off plots (about 1 % reading error) and measured on another "
        "machine: compare orderings and ratios, not absolute QPS",
    }


def summarise(
    results: list[Any],
    builds: list[BuildRecord],
    *,
    protocol: dict[str, Any],
    machine: dict[str, Any],
    versions: dict[str, str],
    targets: Sequence[float],
    seconds: float,
    label: str | None = None,
    failures: list[dict[str, Any]] | None = None,
) -> SweepReport:
    """The :class:`SweepReport` of a run's setting results and build records."""
    rows = [_row(r) for r in results]
    names = list(dict.fromkeys(r["algorithm"] for r in rows))
    algorithms = {n: _algorithm_summary([r for r in rows if r["algorithm"] == n], targets) for n in names}
    for n in names:
        keys = {r["build_key"] for r in rows if r["algorithm"] == n}
        algorithms[n]["builds"] = [asdict(b) for b in builds if b.key in keys]
    pairs = {"hnsw_vs_hnswlib": _hnsw_pairs(results, targets), "wrapper": _wrapper_pairs(results)}
    return SweepReport(
        label=label,
        protocol=protocol,
        machine=machine,
        versions=versions,
        seconds=seconds,
        builds=[asdict(b) for b in builds],
        results=rows,
        algorithms=algorithms,
        pairs=pairs,
        published=_published(algorithms, targets),
        failures=list(failures or []),
    )
