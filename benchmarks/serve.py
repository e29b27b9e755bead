"""Benchmark the search service: per-stage latency in process, and latency and throughput over HTTP.

Two parts, one JSON document on stdout:

1. **in process** (no HTTP): ``SearchService.search`` by image id (the stored vector is read
   back from the index) and by file (decode + preprocess + network on every request), the
   milliseconds of each stage at p50/p95, and how many times cheaper the stored vector is
   than embedding a file (a ratio of two figures from the same run);
2. **over HTTP, signed in**: ``python -m vs_lib serve`` on a free loopback port, driven by a
   real HTTP client (httpx, one keep-alive connection per thread), every request carrying
   its user's ``Authorization: Bearer`` token (issued through :mod:`vs_lib.auth`), at 1, 4
   and 16 concurrent clients, a bounded number of requests per level, plus file queries from
   one client;
3. **uploads beside searches**: blocks of searches (one client) with no uploads and with a
   stream of uploads at ``--upload-rate`` per second (5 by default), alternated so that both
   see the same machine load; search p50/p99 of each, their p99 ratio, and each upload's
   latency (p50, p99, max).

``--platform data`` (default) serves a copy of the real database under ``data/`` (every image
in it, 70k for the corpus; uploads go to the copy, never to ``data/``) with the trained encoder
``--model`` names or the first trained one — when none is trained, a PCA encoder fitted on the
Fashion-MNIST training images (``encoder_note`` says which); ``--platform small`` builds a
3,000-image platform with a PCA encoder in a temporary folder, so the benchmark runs on a
fresh checkout.

``server_cpu_ms_per_request`` / ``client_cpu_ms_per_request`` are CPU time, not wall time: on
a shared machine they show what a search costs whatever the load, and
``cpu_bound_searches_per_s_estimate`` = cores × 1000 / (server + client CPU ms) is the
throughput the machine could reach with both cores to itself.

What a good result looks like (``good_result``): a search feels instant when the whole
round trip stays well under a tenth of a second, so one client's p50 ≤ 15 ms and p99 ≤ 50 ms
over HTTP and an in-process p50 under 100 ms for both query kinds; the most concurrent level
(16 clients by default) served at ≥ 100 searches/s; a stored vector cheaper than embedding a
file; uploads that never stall searches (search p99 with the upload stream ≤ 1.5 × without)
and return quickly themselves (upload p50 ≤ 50 ms); and no errors.

    python benchmarks/serve.py [--platform small] [--model labels] [--requests 400] [--upload-rate 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

STAGES = ("validate", "embed", "search", "rerank", "total")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd_args: list[str], port: int, env: dict | None = None, timeout: float = 900.0):
    """``python -m vs_lib serve`` with ``cmd_args``; returns ``(process, url, log lines)`` once /health answers."""
    import httpx

    cmd = [sys.executable, "-m", "vs_lib", "serve", "--host", "127.0.0.1", "--port", str(port), *cmd_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited:\n" + "".join(lines[-30:]))
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, lines
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("server did not answer /health in time:\n" + "".join(lines[-30:]))


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values, digits: int = 2) -> dict:
    a = np.asarray(values, dtype=float)
    if not len(a):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    p50, p95, p99 = (round(float(np.percentile(a, p)), digits) for p in (50, 95, 99))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": round(float(a.mean()), digits)}


def run_level(url: str, forms: list[dict], clients: int, files: list[bytes] | None = None,
              server_pid: int | None = None, tokens: list[str] | None = None,
              latencies: list[float] | None = None) -> dict:  # fmt: skip
    """Send every request once, ``clients`` at a time (request ``i`` signed in with ``tokens[i]``);
    latency per request, wall-clock throughput, and the CPU milliseconds each request cost the
    server and the client (machine-load independent)."""
    import httpx

    lat = np.zeros(len(forms))
    ok = np.zeros(len(forms), bool)
    stages: list[dict] = [{}] * len(forms)
    errors: list[str] = []
    local = threading.local()

    def one(i: int) -> None:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(base_url=url, timeout=30)
        t0 = time.perf_counter()
        try:
            kw: dict = {"files": {"image": ("q.png", files[i], "image/png")}} if files is not None else {}
            if tokens is not None:
                kw["headers"] = {"Authorization": f"Bearer {tokens[i]}"}
            r = c.post("/search", data=forms[i], **kw)
            if r.status_code == 200:
                ok[i] = True
                stages[i] = r.json()["timings_ms"]
            else:
                errors.append(f"{r.status_code}: {r.text[:120]}")
        except Exception as e:  # connection errors count as errors, never crash the benchmark
            errors.append(f"{type(e).__name__}: {e}")
        lat[i] = (time.perf_counter() - t0) * 1000

    s0 = cpu_seconds(server_pid) if server_pid else 0.0
    c0 = time.process_time()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(forms))))
    wall = time.perf_counter() - t0
    server_cpu = (cpu_seconds(server_pid) - s0) if server_pid else float("nan")
    client_cpu = time.process_time() - c0
    if latencies is not None:
        latencies.extend(lat[ok].tolist())
    keys = sorted({k for s in stages for k in s})
    return {
        "clients": clients,
        "requests": len(forms),
        "signed_in": tokens is not None,
        "errors": len(errors),
        "error_examples": errors[:3],
        **percentiles(lat[ok]),
        "searches_per_s": round(float(ok.sum() / wall), 1),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / len(forms), 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / len(forms), 2),
        "stages_ms_p50": {k: round(float(np.median([s[k] for s in stages if k in s])), 3) for k in keys},
    }


def in_process(service, query_ids: np.ndarray, pngs: list[bytes], user_ids: list[int], seed: int) -> dict:
    """Per-stage milliseconds of the facade itself, by id and by file, at p50 and p95."""
    rng = np.random.default_rng(seed)
    users = rng.choice(user_ids, len(query_ids)).tolist()
    service.search(image_id=int(query_ids[0]), k=10)  # warm-up
    by_id = [service.search(image_id=int(q), k=10, user_id=u).timings_ms for q, u in zip(query_ids, users, strict=True)]
    by_file = [service.search(b, k=10, user_id=u).timings_ms for b, u in zip(pngs, users, strict=True)]
    out: dict = {}
    for kind, runs in (("by_id", by_id), ("by_file", by_file)):
        out[kind] = {s: {p: round(float(np.percentile([t[s] for t in runs], q)), 3) for p, q in (("p50", 50), ("p95", 95))}
                     for s in STAGES}  # fmt: skip
        out[kind]["queries"] = len(runs)
    out["embed_file_over_stored_vector"] = round(
        out["by_file"]["embed"]["p50"] / max(out["by_id"]["embed"]["p50"], 1e-6), 1
    )
    return out


def upload_stream(url: str, tokens: list[str], rate: float, stop: threading.Event, out: dict) -> None:
    """Upload distinct new images at ``rate`` per second (on a fixed schedule, whatever each one
    takes) until ``stop``; each upload's milliseconds go to ``out["latency_ms"]``, failures to
    ``out["errors"]``."""
    import httpx

    from vs_lib import testing

    n = out.setdefault("sent", 0)
    period = 1.0 / rate
    next_t = time.perf_counter()
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            n += 1
            t0 = time.perf_counter()
            try:
                r = c.post("/images", headers={"Authorization": f"Bearer {tokens[n % len(tokens)]}"},
                           data={"tags": f"bench-upload-{n}"},
                           files={"image": ("u.png", testing.drill_image(100_000 + n), "image/png")})  # fmt: skip
                if r.status_code == 201:
                    out["latency_ms"].append((time.perf_counter() - t0) * 1000)
                    out.setdefault("stages", []).append(r.json()["timings_ms"])
                else:
                    out["errors"].append(f"{r.status_code}: {r.text[:120]}")
            except Exception as e:
                out["errors"].append(f"{type(e).__name__}: {e}")
            next_t += period
            stop.wait(max(0.0, next_t - time.perf_counter()))
    out["sent"] = n


def uploads_beside_searches(url: str, make_forms, tokens: list[str], args) -> dict:
    """Search blocks (one client) alternately without and with an upload stream at ``args.upload_rate``/s."""
    quiet: list[float] = []
    busy: list[float] = []
    errors = {"quiet": 0, "busy": 0}
    uploads: dict = {"latency_ms": [], "errors": []}
    per_block = max(50, args.requests // 2)
    for _ in range(args.upload_blocks):
        forms, toks = make_forms(per_block)
        r = run_level(url, forms, 1, tokens=toks, latencies=quiet)
        errors["quiet"] += r["errors"]
        stop = threading.Event()
        t = threading.Thread(target=upload_stream, args=(url, tokens, args.upload_rate, stop, uploads), daemon=True)
        t.start()
        time.sleep(1.0)  # the stream is flowing before the searches start
        forms, toks = make_forms(per_block)
        r = run_level(url, forms, 1, tokens=toks, latencies=busy)
        errors["busy"] += r["errors"]
        stop.set()
        t.join(60)
    q, b = percentiles(quiet), percentiles(busy)
    up = percentiles(uploads["latency_ms"])
    stages = uploads.get("stages", [])
    stage_p50 = {k: round(float(np.median([t[k] for t in stages if k in t])), 2) for k in (stages[0] if stages else {})}
    return {
        "upload_rate_per_s": args.upload_rate,
        "blocks": args.upload_blocks,
        "search_without_uploads": {**q, "requests": len(quiet), "errors": errors["quiet"]},
        "search_with_uploads": {**b, "requests": len(busy), "errors": errors["busy"]},
        "p99_with_over_without": round(b["p99_ms"] / q["p99_ms"], 2) if q["p99_ms"] and b["p99_ms"] else None,
        "upload": {
            **up,
            "max_ms": round(max(uploads["latency_ms"]), 2) if uploads["latency_ms"] else None,
            "acknowledged": len(uploads["latency_ms"]),
            "stages_ms_p50": stage_p50,  # server side: validate, embed, store (file + fsync), commit, index
            "errors": len(uploads["errors"]),
            "error_examples": uploads["errors"][:3],
        },
    }


def _pca_model(workdir: Path) -> tuple[Path, str]:
    from vs_lib import data, models

    ds = data.load_fashion_mnist()
    encoder = models.baseline_encoder("pca", train_images=ds.train_images, seed=0, dim=64)
    path = workdir / "models" / f"{encoder.name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder.save(path)
    return path, "no trained encoder found: a PCA-64 encoder fitted on the Fashion-MNIST training images"


def prepare(args, workdir: Path) -> tuple[dict, list[str], dict]:
    """The platform to serve, in ``workdir``: ``(paths, serve arguments, environment for the server)``."""
    import sqlite3

    from vs_lib import api, config, database, testing

    if args.platform == "small":
        paths = dict(testing.build_small_platform(workdir / "platform", 3000, n_users=40, seed=args.seed))
        paths["encoder_note"] = "PCA-64 fitted on the small platform's images"
    else:
        db = workdir / "visual_search.db"
        with sqlite3.connect(config.db_path()) as src, sqlite3.connect(db) as dst:
            src.backup(dst)  # uploads and tokens go to this copy, never to data/
        database.upgrade(db)
        try:
            model, note = api.resolve_model(args.model), "trained encoder"
        except FileNotFoundError:
            if args.model:
                raise
            model, note = _pca_model(workdir)
        paths = {"data_dir": workdir, "db": db, "model": model, "encoder_note": note,
                 "index": Path(args.index_path) if args.index_path else workdir / "index" / f"{model.stem}-{args.index_kind}"}  # fmt: skip
    env = {**os.environ, "VS_DB": str(paths["db"]), "VS_DATA_DIR": str(paths["data_dir"])}
    serve_args = ["--model", str(paths["model"]), "--index-kind", args.index_kind, "--index-path", str(paths["index"])]
    return paths, serve_args, env


def issue_tokens(db: Path, user_ids: list[int]) -> list[str]:
    """One API token per user (what ``python -m vs_lib user token`` prints)."""
    import contextlib

    from vs_lib import auth, database

    with contextlib.closing(database.connect(db)) as conn:
        return [auth.issue(conn, int(u), "token", seconds=6 * 3600.0, label="benchmark") for u in user_ids]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", choices=("data", "small"), default="data", help="what to serve (see above)")
    ap.add_argument("--model", default=None, help="encoder name or path (default: as `serve` chooses)")
    ap.add_argument("--index-kind", default="flat")
    ap.add_argument("--index-path", default=None, help="index directory (default: in the temporary folder)")
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level (bounded)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--upload-rate", type=float, default=5.0, help="uploads per second beside the searches")
    ap.add_argument("--upload-blocks", type=int, default=3, help="alternations of quiet and upload blocks")
    ap.add_argument("--users", type=int, default=20, help="signed-in users sending the requests")
    ap.add_argument("--skip-in-process", action="store_true", help="only the HTTP parts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import httpx
    from PIL import Image

    from vs_lib import config, data, serving

    with tempfile.TemporaryDirectory(prefix="vs-bench-serve-") as tmp:
        paths, serve_args, env = prepare(args, Path(tmp))
        conn = data.connect(paths["db"])
        try:
            visible = np.array([r[0] for r in conn.execute(
                "SELECT id FROM images WHERE is_private = 0 AND is_flagged = 0")], dtype=np.int64)  # fmt: skip
            user_ids = [int(r[0]) for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT ?", (args.users,))]
        finally:
            conn.close()
        tokens = issue_tokens(paths["db"], user_ids)
        rng = np.random.default_rng(args.seed)
        file_ids = rng.choice(visible, max(50, args.requests // 4))

        # 1. in process (this also builds the index the server then loads)
        service = serving.SearchService.from_paths(paths["model"], index_kind=args.index_kind, db_path=paths["db"],
                                                   index_path=paths["index"], progress=False,
                                                   prefill=not args.skip_in_process)  # fmt: skip
        pngs = []
        for i in file_ids:
            buf = io.BytesIO()
            Image.fromarray(service.load_image(int(i))).save(buf, format="PNG")
            pngs.append(buf.getvalue())
        local = None if args.skip_in_process else in_process(service, rng.choice(visible, len(file_ids)), pngs,
                                                             user_ids, args.seed)  # fmt: skip
        service.close()
        del service

        # 2. over HTTP
        port = free_port()
        t_start = time.perf_counter()
        proc, url, _ = start_server(serve_args, port, env=env)
        startup_s = time.perf_counter() - t_start
        try:
            health = httpx.get(url + "/health").json()

            def forms(n: int) -> tuple[list[dict], list[str]]:
                q, u = rng.choice(visible, n), rng.integers(0, len(tokens), n)
                return [{"image_id": str(int(a)), "k": "10"} for a in q], [tokens[int(b)] for b in u]

            warm, warm_tokens = forms(30)
            run_level(url, warm, 2, tokens=warm_tokens)  # warm-up: connections, caches, lazy imports
            levels = {}
            for c in args.levels:
                f, t = forms(args.requests)
                levels[str(c)] = run_level(url, f, c, server_pid=proc.pid, tokens=t)
            file_level = run_level(url, [{"k": "10"} for _ in pngs], 1, files=pngs, server_pid=proc.pid,
                                   tokens=[tokens[0]] * len(pngs))  # fmt: skip
            uploads = uploads_beside_searches(url, forms, tokens, args)
        finally:
            stop_server(proc)
    result = report(args, health, startup_s, local, levels, file_level, uploads, paths["encoder_note"])
    print(json.dumps(result, indent=2))
    if args.out:
        config.write_json_atomic(args.out, result)
    return 0


def report(args, health: dict, startup_s: float, local: dict | None, levels: dict, file_level: dict,
           uploads: dict, encoder_note: str) -> dict:  # fmt: skip
    one, many = levels.get("1"), levels.get(str(max(args.levels)))
    cpu_ms = (many["server_cpu_ms_per_request"] + many["client_cpu_ms_per_request"]) if many else None
    ratio, up50 = uploads["p99_with_over_without"], uploads["upload"]["p50_ms"]
    good = {
        "http_single_p50_le_15ms": bool(one and one["p50_ms"] is not None and one["p50_ms"] <= 15),
        "http_single_p99_le_50ms": bool(one and one["p99_ms"] is not None and one["p99_ms"] <= 50),
        f"http_{max(args.levels)}_clients_ge_100_per_s": bool(many and many["searches_per_s"] >= 100),
        "search_p99_with_uploads_le_1.5x_without": bool(ratio is not None and ratio <= 1.5),
        "upload_p50_le_50ms": bool(up50 is not None and up50 <= 50),
        "zero_errors": all(v["errors"] == 0 for v in levels.values())
        and file_level["errors"] == 0
        and uploads["upload"]["errors"] == 0
        and uploads["search_with_uploads"]["errors"] == uploads["search_without_uploads"]["errors"] == 0,
    }
    if local is not None:
        good["in_process_p50_lt_100ms"] = all(local[k]["total"]["p50"] < 100 for k in ("by_id", "by_file"))
        good["stored_vector_cheaper_than_embedding"] = local["embed_file_over_stored_vector"] > 1
    return {
        "platform": args.platform,
        "n_indexed": health["images_indexed"],
        "model": health["model"],
        "encoder_note": encoder_note,
        "index_kind": health["index_kind"],
        "server_startup_s": round(startup_s, 1),
        "in_process": local,
        "levels": levels,
        "file_query_1_client": file_level,
        "uploads_beside_searches": uploads,
        "good_result": good,
        # what the machine could serve if this benchmark had both cores to itself
        "cpu_bound_searches_per_s_estimate": round((os.cpu_count() or 1) * 1000 / cpu_ms, 1) if cpu_ms else None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "client and server share this machine's cores (loopback)",
        },
    }


if __name__ == "__main__":
    sys.exit(main())
