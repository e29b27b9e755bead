"""Figures: one place that saves them, and a few pictures several notebooks draw.

``save_fig(fig, "name", topic="01_data_engineering")`` writes
``figures/01_data_engineering/name.png`` at a fixed dpi; ``save_results`` writes the
notebook's key figures as ``figures/<topic>/results.json`` for the notebook tests.
:func:`failure_gallery` draws the worst queries of an offline evaluation; :func:`show_matrix` and
:func:`show_histogram` draw an image as its numbers and its values as a histogram.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import config

if TYPE_CHECKING:
    import torch
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .evaluate import Evaluation

DPI = 110


def save_fig(fig: Figure, name: str, topic: str) -> Path:
    """Save ``fig`` as ``figures/<topic>/<name>.png`` (atomic) and return the path."""
    path = config.figures_dir() / topic / f"{name}.png"
    with config.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    return path


def save_results(results: dict[str, Any], topic: str) -> Path:
    """Write a notebook's key figures to ``figures/<topic>/results.json`` (atomic)."""
    return config.write_json_atomic(config.figures_dir() / topic / "results.json", results)


def image_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    size: float = 1.2,
    cmap: str = "gray",
    suptitle: str | None = None,
    title_colors: Sequence[str] | None = None,
) -> Figure:
    """A grid of images (``(n, H, W)`` or ``(n, H, W, C)`` uint8/float) with optional titles."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols)) if n else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(
            images[i], cmap=cmap if np.ndim(images[i]) == 2 else None, vmin=0 if np.ndim(images[i]) == 2 else None
        )
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(titles[i], fontsize=7, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def ranked_rows(
    query_images: Sequence[np.ndarray],
    result_images: Sequence[Sequence[np.ndarray]],
    relevant: Sequence[Sequence[bool]] | None = None,
    row_titles: Sequence[str] | None = None,
    result_titles: Sequence[Sequence[str]] | None = None,
    size: float = 1.1,
) -> Figure:
    """One row per query: the query, then its ranked results (green frame = relevant, red = not)."""
    import matplotlib.pyplot as plt

    nq = len(query_images)
    k = max(len(r) for r in result_images) if nq else 0
    fig, axes = plt.subplots(nq, k + 1, figsize=(size * (k + 1), size * nq * 1.2), squeeze=False)
    for i in range(nq):
        ax = axes[i, 0]
        ax.imshow(query_images[i], cmap="gray")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(row_titles[i] if row_titles else "query", fontsize=7, fontweight="bold")
        for spine in ax.spines.values():
            spine.set_color("blue"), spine.set_linewidth(2)
        for j in range(k):
            ax = axes[i, j + 1]
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(result_images[i]):
                ax.axis("off")
                continue
            ax.imshow(result_images[i][j], cmap="gray")
            if result_titles is not None:
                ax.set_title(result_titles[i][j], fontsize=6)
            if relevant is not None:
                c = "green" if relevant[i][j] else "red"
                for spine in ax.spines.values():
                    spine.set_color(c), spine.set_linewidth(2)
    fig.tight_layout()
    return fig


def failure_gallery(
    evaluation: Evaluation,
    images_by_id: np.ndarray,
    n: int = 6,
    by: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """The worst queries of an evaluation, each followed by its top k (green = same class).

    ``images_by_id``: every image indexed by its id (e.g. the 70,000 Fashion-MNIST images);
    ``by``: the per-query column that decides "worst" (default ``ap@k``).
    """
    from . import metrics

    names = list(class_names or metrics.FASHION_MNIST_CLASSES)
    worst = evaluation.failures(n, by)
    queries = [images_by_id[int(i)] for i in worst["query_id"]]
    results = [[images_by_id[int(i)] for i in ids] for ids in worst["result_ids"]]
    relevant = [[lab == q for lab in labs] for q, labs in zip(worst["label"], worst["result_labels"], strict=True)]
    scores = worst[by or f"ap@{evaluation.k}"]
    row_titles = [f"{names[q]}\nAP {a:.2f}" for q, a in zip(worst["label"], scores, strict=True)]
    result_titles = [[names[lab][:9] for lab in labs] for labs in worst["result_labels"]]
    return ranked_rows(queries, results, relevant=relevant, row_titles=row_titles, result_titles=result_titles)


def show_matrix(
    image: np.ndarray,
    ax: Axes | None = None,
    fmt: str | None = None,
    fontsize: float | None = None,
    cmap: str = "gray",
    title: str | None = None,
) -> Axes:
    """Draw a 2-D image as the matrix of its values: every pixel a cell with its number.

    ``image``: (H, W) array (uint8 or float).  Best for small crops (≤ 28 x 28).  Text
    colour flips with the background so every number stays readable.
    """
    import matplotlib.pyplot as plt

    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"show_matrix expects a 2-D (H, W) array, got shape {a.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.32 * a.shape[1] + 1, 0.32 * a.shape[0] + 1))
    if fmt is None:
        fmt = "{:.0f}" if np.issubdtype(a.dtype, np.integer) else "{:.1f}"
    if fontsize is None:
        fontsize = max(3.0, min(9.0, 160.0 / max(a.shape)))
    vmin, vmax = float(a.min()), float(a.max())
    ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
    mid = (vmin + vmax) / 2
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(
                j,
                i,
                fmt.format(a[i, j]),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="black" if a[i, j] > mid else "white",
            )
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def show_histogram(
    values: np.ndarray | torch.Tensor,
    ax: Axes | None = None,
    bins: int = 50,
    title: str | None = None,
    color: str = "C0",
) -> Axes:
    """Histogram of an image's (or a batch's) values, with mean and std in the title."""
    import matplotlib.pyplot as plt

    v = np.asarray(values, dtype=np.float64).ravel()
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 2.2))
    ax.hist(v, bins=bins, color=color)
    stats = f"mean {v.mean():.2f}, std {v.std():.2f}, [{v.min():.2f}, {v.max():.2f}]"
    ax.set_title(f"{title}\n{stats}" if title else stats, fontsize=8)
    ax.tick_params(labelsize=7)
    return ax


_SHORT = {"Conv2d": "conv 3×3", "BatchNorm2d": "BN", "BatchNorm1d": "BN", "MaxPool2d": "max-pool", "Linear": "linear"}


def layer_blocks(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Group :func:`vs_lib.models.layer_shapes` rows into the blocks a diagram draws.

    A block is the run of leaf layers under one parent module (``features.0``, ...), split
    again at every ``Flatten`` and ``Linear``.  Each block: ``name`` (the parent), ``ops``
    (short layer names), ``shape`` (its last output shape without the batch axis), ``params``.
    """
    blocks: list[dict[str, Any]] = []
    for row in rows:
        parent = str(row["layer"]).rsplit(".", 1)[0]
        kind = str(row["type"])
        if not blocks or blocks[-1]["name"] != parent or kind in ("Flatten", "Linear"):
            blocks.append({"name": parent, "ops": [], "shape": (), "params": 0})
        block = blocks[-1]
        block["ops"].append(_SHORT.get(kind, kind.lower()))
        block["shape"] = tuple(row["output shape"])[1:]
        block["params"] += int(row["params"])
    return blocks


def layer_diagram(
    rows: Sequence[Mapping[str, Any]], input_shape: Sequence[int], title: str = "", output_note: str = "L2-normalise"
) -> Figure:
    """A block diagram of a network, drawn from its recorded layer shapes (one box per block).

    ``rows``: :func:`vs_lib.models.layer_shapes` of one forward pass; ``input_shape``: one
    image's shape, e.g. ``(1, 28, 28)``.  Box heights grow with the log of each block's output
    size; each box shows its layers, output shape and parameter count.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    blocks = [{"name": "input", "ops": ["image"], "shape": tuple(input_shape), "params": 0}, *layer_blocks(rows)]
    sizes = [float(np.prod(b["shape"])) for b in blocks]
    top = np.log10(max(sizes))
    fig, ax = plt.subplots(figsize=(1.45 * len(blocks) + 1.5, 3.2))
    for i, (block, size) in enumerate(zip(blocks, sizes, strict=True)):
        h = 0.5 + 2.0 * np.log10(max(size, 1.0)) / top
        colour = "C0" if "conv 3×3" in block["ops"] else "C2" if "linear" in block["ops"] else "0.75"
        ax.add_patch(FancyBboxPatch((i * 1.4, -h / 2), 1.1, h, boxstyle="round,pad=0.03", color=colour, alpha=0.35))
        ax.text(i * 1.4 + 0.55, h / 2 + 0.12, "\n".join(block["ops"]), ha="center", va="bottom", fontsize=7)
        shape = "×".join(str(s) for s in block["shape"])
        params = f"\n{block['params']:,} p" if block["params"] else ""
        ax.text(i * 1.4 + 0.55, 0, shape + params, ha="center", va="center", fontsize=7)
        if i:
            ax.annotate("", (i * 1.4, 0), ((i - 1) * 1.4 + 1.1, 0), arrowprops={"arrowstyle": "->", "lw": 0.8})
    if output_note:
        end = (len(blocks) - 1) * 1.4 + 1.1
        ax.annotate(
            output_note, (end + 0.9, 0), (end, 0), fontsize=7, va="center", arrowprops={"arrowstyle": "<-", "lw": 0.8}
        )
    ax.set_xlim(-0.2, len(blocks) * 1.4 + 1.2)
    ax.set_ylim(-1.7, 2.4)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    return fig
