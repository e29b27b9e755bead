"""The capacity plan: measured per-vector costs and speeds → memory, shards, replicas, machines.

Nothing here is measured; it is the arithmetic an interview answer walks through, fed with
the figures :mod:`.growth` and :mod:`.embedding` measure on this machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CapacityRow", "capacity_plan"]


@dataclass(frozen=True)
class CapacityRow:
    """One encoding at one platform size.  Query-load and embedding fields are ``None`` when
    their inputs (``qps_at``, ``embed_images_per_core_second``) were not given."""

    encoding: str
    n_images: float
    bytes_per_vector: float  # the encoding's bytes + the id
    total_tb: float
    shards: int
    vectors_per_shard: float
    qps_per_shard: float | None = None
    replicas: int | None = None
    machines: int | None = None
    embed_core_hours: float | None = None
    embed_days_on_1000_machines: float | None = None


def capacity_plan(
    n_images: float,
    bytes_per_vector: dict[str, float],
    *,
    id_bytes: float = 8.0,
    ram_per_machine_gb: float = 256.0,
    usable_fraction: float = 0.7,
    qps_at: Callable[[float], float] | None = None,
    peak_qps: float = 50_000.0,
    cores_per_machine: int = 32,
    thread_efficiency: float = 1.0,
    min_replicas: int = 2,
    embed_images_per_core_second: float | None = None,
    embed_cores: int = 32,
) -> list[CapacityRow]:
    """Memory, shards, replicas and machines to serve ``n_images`` under each encoding.

    - total bytes = n · (bytes_per_vector + ``id_bytes``);
    - shards = ceil(total / (RAM per machine · ``usable_fraction``)), one shard per machine;
    - every query fans out to every shard (scatter-gather), so one replica set handles
      ``qps_at(n / shards) · cores_per_machine · thread_efficiency`` queries/s (``qps_at``:
      measured single-core QPS as a function of vectors per shard, e.g. the fitted growth
      law; ``thread_efficiency``: the share of a core each added core contributes — 1 assumes
      a scan that scales linearly with cores, which a memory-bound scan does not); replicas =
      max(``min_replicas``, ceil(peak_qps / that)); machines = shards · replicas;
    - embedding: core-hours = n / ``embed_images_per_core_second`` / 3600, and the wall-clock
      days on ``embed_cores``·1000 cores.
    """
    if not 0 < thread_efficiency <= 1:
        raise ValueError(f"thread_efficiency must be in (0, 1], got {thread_efficiency}")
    ram = ram_per_machine_gb * 1e9 * usable_fraction
    rows = []
    for name, bpv in bytes_per_vector.items():
        total = n_images * (bpv + id_bytes)
        shards = max(1, math.ceil(total / ram))
        qps_per_shard = replicas = machines = core_h = days = None
        if qps_at is not None:
            qps_per_shard = float(qps_at(n_images / shards)) * cores_per_machine * thread_efficiency
            replicas = max(min_replicas, math.ceil(peak_qps / max(qps_per_shard, 1e-9)))
            machines = shards * replicas
        if embed_images_per_core_second:
            core_h = n_images / embed_images_per_core_second / 3600
            days = core_h / (embed_cores * 1000) / 24
        rows.append(
            CapacityRow(
                encoding=name,
                n_images=n_images,
                bytes_per_vector=bpv + id_bytes,
                total_tb=total / 1e12,
                shards=shards,
                vectors_per_shard=n_images / shards,
                qps_per_shard=qps_per_shard,
                replicas=replicas,
                machines=machines,
                embed_core_hours=core_h,
                embed_days_on_1000_machines=days,
            )
        )
    return rows
