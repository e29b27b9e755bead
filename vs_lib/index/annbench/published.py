"""The published ann-benchmarks figures for ``fashion-mnist-784-euclidean``, as inputs to compare with.

ann-benchmarks publishes its results as plots only: per algorithm, the recall–QPS frontier on
a logit recall axis and a log QPS axis (on ann-benchmarks.com and in the project's README).
The values below were **read off the fashion-mnist-784-euclidean plot** with a calibrated
digitiser: axes fixed by the plot's gridlines, each algorithm's line found by its legend
colour, the line's height read at recall 0.90, 0.95 and 0.99.  On a test plot drawn the way
ann-benchmarks draws them, readings were within about 1 % (median 0.5 %); a reading is the
frontier *line* between two measured settings, so it is at most the QPS of the next measured
setting to its right.  Brute force cannot be read: its recall of 1 lies at infinity on a
logit axis — so published ratios here are taken to hnswlib, which both runs have.

Runs: **April 2025** (AWS r6i.16xlarge, Intel Xeon with AVX-512, hyper-threading off, one CPU
per algorithm, 31 algorithms side by side; hnswlib built from source, FAISS from conda) and,
for Annoy (disabled in ann-benchmarks since late 2023), **April 2023** on the same machine type.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUBLISHED", "PublishedRun", "published_qps"]


@dataclass(frozen=True)
class PublishedRun:
    """One published run: ``qps[algorithm][target recall]`` read off its plot (``None``: the
    line does not reach that recall), with the citation and the reading error."""

    label: str
    citation: str
    machine: str
    reading_error: float
    qps: dict[str, dict[float, float | None]]


PUBLISHED = (
    PublishedRun(
        label="April 2025",
        citation=(
            "ann-benchmarks, results of April 2025 (plots on ann-benchmarks.com, read off the "
            "fashion-mnist-784-euclidean plot)"
        ),
        machine="AWS r6i.16xlarge, one CPU per algorithm",
        reading_error=0.01,
        qps={
            "hnswlib": {0.90: 10_200, 0.95: 8_370, 0.99: 4_140},
            "faiss-hnsw": {0.90: 6_930, 0.95: 5_760, 0.99: 3_420},
            "faiss-ivf": {0.90: 3_090, 0.95: 2_110, 0.99: 1_180},
            "scann": {0.90: 9_410, 0.95: 7_950, 0.99: 5_120},
            "pynndescent": {0.90: 12_800, 0.95: 10_310, 0.99: 6_430},
        },
    ),
    PublishedRun(
        label="April 2023",
        citation=(
            "ann-benchmarks, results of April 2023 (plots on ann-benchmarks.com, read off the "
            "fashion-mnist-784-euclidean plot; the last run with Annoy)"
        ),
        machine="AWS r6i.16xlarge, one CPU per algorithm",
        reading_error=0.01,
        qps={
            "hnswlib": {0.90: 9_510, 0.95: 8_000, 0.99: 4_350},
            "annoy": {0.90: 1_780, 0.95: 1_280, 0.99: 539},
        },
    ),
)


def published_qps(algorithm: str, target: float) -> tuple[float | None, float | None, PublishedRun | None]:
    """``(QPS, QPS / hnswlib's QPS in the same run, run)`` of ``algorithm`` at ``target``
    recall, from the latest published run that has it; ``(None, None, None)`` if none has."""
    for run in PUBLISHED:
        if algorithm in run.qps:
            qps = run.qps[algorithm].get(target)
            peer = run.qps["hnswlib"].get(target)
            return qps, (qps / peer if qps and peer else None), run
    return None, None, None
