"""Collections of a folder: encoder throughput, syncs, query latency and dedup at scale, as JSON.

    python benchmarks/folder.py [--folder /usr/share/tuxpaint/stamps] [--files 1000] [--dedup 100000] [--threads 1]

- ``encoder``: the photo encoder (EfficientNet-Lite0, BN folded) at 224 px, batch 32, in
  images per second, its FLOPs per image (conv and matmul, 2 per multiply-add) and the GFLOP/s
  that makes, as a fraction of this machine's measured dense matmul and 3x3-convolution rates.
  Depthwise and 1x1 convolutions are memory-bound, so a good result is a fraction around 0.2,
  not 1;
- ``first_index``: indexing the folder from nothing (scan, hash, decode, embed, save);
- ``resync``: a generated folder of ``--files`` images indexed once, then synced with nothing
  changed (a good result: under a second for 1,000 files, as nothing is decoded), then after
  adding 10 files (a good result: the scan plus about 10 images' worth of embedding, far from a
  re-index);
- ``query``: a 12-megapixel JPEG upload (4000 x 3000, quality 90) to ranked results over the
  folder's collection: p50 and p90 over repeats, with the reduced-size JPEG decoding the
  collection uses and, for comparison, a full decode; a good result is a p50 well under 300 ms;
- ``dedup``: duplicate groups over ``--dedup`` *synthetic* images (random 64-bit hashes and
  256-d vectors with planted near-duplicate groups; labelled ``synthetic``), at a quarter of
  that size too, each in a fresh process: time, peak resident memory above what the inputs
  already held, and the share of planted groups found.  Memory must grow about linearly with N.

Every collection is built in a temporary data folder; nothing is written into the folders
read.  Timings on a shared machine are noisy: compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def data_dir(path: Path) -> Iterator[None]:
    """Point vs_lib's data and models folders at ``path`` for the block (restored after)."""
    keys = ("VS_DATA_DIR", "VS_MODELS_DIR")
    before = {k: os.environ.get(k) for k in keys}
    os.environ["VS_DATA_DIR"], os.environ["VS_MODELS_DIR"] = str(path), str(path / "models")
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def gflops_rate(fn: Any, flops: float, repeats: int = 5) -> float:
    """GFLOP/s of ``fn()`` doing ``flops``: the median of ``repeats`` after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / float(np.median(times)) / 1e9


def encoder_throughput(batch: int = 32) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from vs_lib import photo

    enc = photo.photo_encoder()
    net = enc.network.eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            net(x[:1])
        flops = float(counter.get_total_flops())
        enc_rate = gflops_rate(lambda: net(x), flops * batch)
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        matmul = gflops_rate(lambda: a @ b, 2 * 2048**3)
        img, w = torch.randn(8, 64, 56, 56), torch.randn(64, 64, 3, 3)
        conv = gflops_rate(lambda: F.conv2d(img, w, padding=1), 2 * 8 * 64 * 64 * 9 * 56 * 56)
    machine = max(matmul, conv)
    return {
        "batch": batch,
        "threads": torch.get_num_threads(),
        "gflop_per_image": flops / 1e9,
        "images_per_second": enc_rate * 1e9 / flops,
        "gflops": enc_rate,
        "machine_matmul_gflops": matmul,
        "machine_conv3x3_gflops": conv,
        "fraction_of_machine": enc_rate / machine,
    }


def generated_folder(root: Path, n: int, start: int = 0, size: int = 160) -> Path:
    """``n`` distinct small JPEGs (smooth colour blobs) as ``root/gNN/img_<i>.jpg``."""
    from PIL import Image

    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        sub = root / f"g{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC).save(sub / f"img_{i}.jpg", quality=90)
    return root


def sync_benchmarks(folder: str, n_files: int, tmp: Path) -> dict[str, Any]:
    from vs_lib import collection

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    first = collection.index_folder(folder, progress=False)
    out["first_index"] = {
        "folder": folder,
        "images": first.total,
        "embedded": first.embedded,
        "skipped": len(first.all_skipped()),
        "seconds": time.perf_counter() - t0,
        "images_per_second": first.embedded / max(time.perf_counter() - t0, 1e-9),
    }
    again = collection.index_folder(folder, progress=False)
    out["first_index"]["resync_nothing_changed_seconds"] = again.seconds

    gen = generated_folder(tmp / "generated", n_files)
    t0 = time.perf_counter()
    collection.index_folder(gen, progress=False)
    base_seconds = time.perf_counter() - t0
    same = [collection.index_folder(gen, progress=False) for _ in range(3)]
    generated_folder(gen, 10, start=n_files)
    added = collection.index_folder(gen, progress=False)
    out["resync"] = {
        "files": n_files,
        "first_index_seconds": base_seconds,
        "nothing_changed_seconds": float(np.median([s.seconds for s in same])),
        "nothing_changed_embedded": max(s.embedded for s in same),
        "added_10_seconds": added.seconds,
        "added_10_embedded": added.embedded,
        "added_10_vs_first_index": added.seconds / base_seconds,
    }
    return out


def big_jpeg() -> bytes:
    """A 12-megapixel photo-like JPEG: chelsea upscaled to 4000 x 3000 with a little noise."""
    from PIL import Image

    from vs_lib.collection import samples

    im = samples.sample_photo("chelsea").resize((4000, 3000), Image.Resampling.BICUBIC)
    noisy = np.asarray(im, np.int16) + np.random.default_rng(0).normal(0, 6, (3000, 4000, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def query_latency(folder: str, repeats: int = 15) -> dict[str, Any]:
    from PIL import Image

    from vs_lib import collection

    coll = collection.Collection.open(folder=folder)
    raw = big_jpeg()
    coll.search(raw, k=10)  # warm-up: model and index loaded
    runs = [coll.search(raw, k=10).milliseconds for _ in range(repeats)]
    full = []
    for _ in range(max(3, repeats // 3)):
        t0 = time.perf_counter()
        coll.search(Image.open(io.BytesIO(raw)).convert("RGB"), k=10)  # every pixel decoded
        full.append(1e3 * (time.perf_counter() - t0))
    total = np.array([r["total"] for r in runs])
    return {
        "upload_bytes": len(raw),
        "megapixels": 12.0,
        "gallery": len(coll),
        "repeats": repeats,
        "p50_ms": float(np.percentile(total, 50)),
        "p90_ms": float(np.percentile(total, 90)),
        "p50_ms_by_stage": {s: float(np.median([r[s] for r in runs])) for s in runs[0] if s != "total"},
        "full_decode_p50_ms": float(np.median(full)),
    }


def synthetic_duplicates(n: int, rng: np.random.Generator, dim: int = 256) -> tuple[Any, ...]:
    """``n`` random hashes and vectors; every 50th image gets a planted near-copy (2 bits / cos ~0.98)."""
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(
        np.uint64
    )
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    originals = np.arange(0, n - 1, 50)
    copies = originals + 1
    flip = np.uint64(1) << rng.integers(0, 64, (len(copies), 2)).astype(np.uint64)
    hashes[copies] = hashes[originals] ^ flip[:, 0] ^ flip[:, 1]
    vectors[copies] = vectors[originals] + 0.2 * rng.standard_normal((len(copies), dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return hashes, vectors, originals, copies


def current_rss() -> int:
    """Bytes of this process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Bytes of this process's peak resident memory (Linux ``VmHWM``: reset by exec, unlike ``ru_maxrss``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def dedup_in_child(n: int) -> dict[str, Any]:
    """:func:`dedup_benchmark` in a fresh process, so its peak memory is its own."""
    done = subprocess.run(
        [sys.executable, __file__, "--dedup-only", str(n)], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def dedup_benchmark(n: int, seed: int = 0) -> dict[str, Any]:
    from vs_lib.collection import dedup

    rng = np.random.default_rng(seed)
    hashes, vectors, originals, copies = synthetic_duplicates(n, rng)
    sha = [f"{i:x}" for i in range(n)]
    h, v, _, _ = synthetic_duplicates(200, np.random.default_rng(seed + 1))
    dedup.duplicate_groups(200, sha256=sha[:200], hashes=h, threshold=4, vectors=v, min_cosine=0.9)  # libraries loaded
    rss_before = current_rss()
    t0 = time.perf_counter()
    groups, pairs = dedup.duplicate_groups(
        n, sha256=sha, hashes=hashes, threshold=dedup.DEFAULT_THRESHOLD, vectors=vectors, min_cosine=0.9
    )
    seconds = time.perf_counter() - t0
    peak = peak_rss() - rss_before
    planted = {(int(a), int(b)) for a, b in zip(originals, copies, strict=True)}
    found = {(g.rows[0], g.rows[1]) for g in groups if len(g.rows) == 2}
    return {
        "synthetic": True,
        "n": n,
        "seconds": seconds,
        "peak_extra_rss_mb": peak / 2**20,
        "input_mb": (hashes.nbytes + vectors.nbytes) / 2**20,
        "dense_matrix_would_need_mb": 4 * n * n / 2**20,
        "groups": len(groups),
        "planted_groups": len(planted),
        "planted_found": len(planted & found) / len(planted),
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--folder", default="/usr/share/tuxpaint/stamps", help="the folder to index (default: the stamps)")
    ap.add_argument("--files", type=int, default=1000, help="files of the generated folder for the re-sync figures")
    ap.add_argument("--dedup", type=int, default=100_000, help="synthetic images for the dedup figures")
    ap.add_argument("--repeats", type=int, default=15, help="query repeats")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--dedup-only", type=int, default=0, help=argparse.SUPPRESS)  # the child of dedup_in_child
    args = ap.parse_args(argv)
    if args.dedup_only:
        print(json.dumps(dedup_benchmark(args.dedup_only)))
        return 0

    import torch

    torch.set_num_threads(args.threads)  # this script owns its process: once, at start-up
    if not Path(args.folder).is_dir():
        print(json.dumps({"error": f"no folder {args.folder} (install Debian's tuxpaint-stamps-default)"}))
        return 2
    out: dict[str, Any] = {"threads": args.threads, "load_average_start": os.getloadavg()[0]}
    out["encoder"] = encoder_throughput()
    with tempfile.TemporaryDirectory() as tmp, data_dir(Path(tmp) / "data"):
        out.update(sync_benchmarks(args.folder, args.files, Path(tmp)))
        out["query"] = query_latency(args.folder, args.repeats)
    out["dedup"] = [dedup_in_child(max(1000, args.dedup // 4)), dedup_in_child(args.dedup)]
    d0, d1 = out["dedup"]
    # memory ratio over size ratio: about 1 when memory grows linearly, 4 here if it grew as N^2
    out["dedup_memory_growth"] = (d1["peak_extra_rss_mb"] / d0["peak_extra_rss_mb"]) / (d1["n"] / d0["n"])
    out["load_average_end"] = os.getloadavg()[0]
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
