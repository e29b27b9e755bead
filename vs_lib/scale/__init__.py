"""Scaling past one machine: batch embedding on Ray Data, binary codes, growth and capacity.

Four parts, each used by notebook ``09_scaling`` and ``benchmarks/scale.py``:

- :mod:`.embedding` — the indexing pipeline's embedding step, in-process or as a Ray Data
  job writing ``(image_id, embedding)`` Parquet (``python -m vs_lib embed``);
- :mod:`.binary` — sign-bit embeddings ranked by Hamming distance, and their recall;
- :mod:`.growth` — a compressed FAISS index grown to 10M+ synthetic vectors, measured at
  checkpoints (build time, memory, QPS, recall), the fitted growth exponents, and the
  measured bytes per vector of each encoding;
- :mod:`.capacity` — those measured figures turned into memory, shards, replicas, machines
  and embedding machine-hours for 100-200 B images.
"""

from .binary import BinaryRecall, binarize, binary_index, binary_recall, hamming_distances
from .capacity import CapacityRow, capacity_plan
from .embedding import (
    CLI_HELP,
    EmbedActor,
    InProcessEmbedding,
    RayEmbedding,
    cli_add_arguments,
    cli_main,
    embed_inprocess,
    embed_with_ray,
    images_by_id,
    read_embeddings,
    write_embeddings,
)
from .growth import (
    ENCODINGS,
    EncodingCost,
    GrowthPoint,
    LogLogFit,
    fit_loglog,
    measure_bytes_per_vector,
    measure_growth,
)

__all__ = [
    "CLI_HELP",
    "ENCODINGS",
    "BinaryRecall",
    "CapacityRow",
    "EmbedActor",
    "EncodingCost",
    "GrowthPoint",
    "InProcessEmbedding",
    "LogLogFit",
    "RayEmbedding",
    "binarize",
    "binary_index",
    "binary_recall",
    "capacity_plan",
    "cli_add_arguments",
    "cli_main",
    "embed_inprocess",
    "embed_with_ray",
    "fit_loglog",
    "hamming_distances",
    "images_by_id",
    "measure_bytes_per_vector",
    "measure_growth",
    "read_embeddings",
    "write_embeddings",
]
