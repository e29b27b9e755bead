"""Benchmark the HTTP search service: latency percentiles and throughput of POST /search.

Starts ``python -m vs_lib serve`` on a free loopback port (the real database under data/,
N = every image in it, 70k for the corpus), waits for /health, then drives /search with
a real HTTP client (httpx, one keep-alive connection per thread) at 1, 4 and 16
concurrent clients; a bounded number of requests per level; prints JSON:

    {"n_indexed", "model", "levels": {"1": {"p50_ms", "p95_ms", "p99_ms", "mean_ms",
     "searches_per_s", "requests", "errors", "stages_ms_p50": {...}}, ...},
     "file_query_1_client": {...}, "targets": {...}, "machine": {...}}

``server_cpu_ms_per_request`` / ``client_cpu_ms_per_request`` are CPU time, not wall time:
on a shared machine they show what a search costs whatever the load, and
``cpu_bound_searches_per_s_estimate`` = cores × 1000 / (server + client CPU ms) is the
throughput the machine could reach with both cores to itself.

Targets (issue 6): single client p50 <= 15 ms and p99 <= 50 ms; >= 100 searches/s with
16 clients; zero errors.

    python benchmarks/serve.py [--model labels] [--requests 400] [--out reports/bench/serve.json]
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, kind: str, port: int, env: dict | None = None, timeout: float = 900.0,
                 index_path: str | None = None):
    import httpx

    cmd = [sys.executable, "-m", "vs_lib", "serve", "--host", "127.0.0.1", "--port", str(port), "--index-kind", kind]
    if model:
        cmd += ["--model", model]
    if index_path:
        cmd += ["--index-path", str(index_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(l) for l in proc.stdout], daemon=True).start()
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
    proc.terminate()
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


def run_level(url: str, forms: list[dict], clients: int, files: list[bytes] | None = None,
              server_pid: int | None = None) -> dict:
    """Send every request once, ``clients`` at a time; latency per request, wall-clock throughput,
    and the CPU milliseconds each request cost the server and the client (machine-load independent)."""
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
            kw = {"files": {"image": ("q.png", files[i], "image/png")}} if files is not None else {}
            r = c.post("/search", data=forms[i], **kw)
            lat[i] = (time.perf_counter() - t0) * 1000
            if r.status_code == 200:
                ok[i] = True
                stages[i] = r.json()["timings_ms"]
            else:
                errors.append(f"{r.status_code}: {r.text[:120]}")
        except Exception as e:  # connection errors count as errors, never crash the benchmark
            lat[i] = (time.perf_counter() - t0) * 1000
            errors.append(f"{type(e).__name__}: {e}")

    s0 = cpu_seconds(server_pid) if server_pid else 0.0
    c0 = time.process_time()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(forms))))
    wall = time.perf_counter() - t0
    server_cpu = (cpu_seconds(server_pid) - s0) if server_pid else float("nan")
    client_cpu = time.process_time() - c0
    good = lat[ok]
    keys = sorted({k for s in stages for k in s})
    return {
        "clients": clients,
        "requests": len(forms),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_ms": round(float(np.percentile(good, 50)), 2) if len(good) else None,
        "p95_ms": round(float(np.percentile(good, 95)), 2) if len(good) else None,
        "p99_ms": round(float(np.percentile(good, 99)), 2) if len(good) else None,
        "mean_ms": round(float(good.mean()), 2) if len(good) else None,
        "searches_per_s": round(float(ok.sum() / wall), 1),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / len(forms), 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / len(forms), 2),
        "stages_ms_p50": {k: round(float(np.median([s[k] for s in stages if k in s])), 3) for k in keys},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="encoder name or path (default: as `serve` chooses)")
    ap.add_argument("--index-kind", default="flat")
    ap.add_argument("--index-path", default=None, help="index directory (default: as `serve` chooses)")
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level (bounded)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import httpx
    from PIL import Image

    from vs_lib import config, data

    conn = data.connect()
    try:
        visible = np.array([r[0] for r in conn.execute(
            "SELECT id FROM images WHERE is_private = 0 AND is_flagged = 0 AND split = 'test'")], dtype=np.int64)
        n_users = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    finally:
        conn.close()
    rng = np.random.default_rng(args.seed)
    port = free_port()
    t_start = time.perf_counter()
    proc, url, log = start_server(args.model, args.index_kind, port, index_path=args.index_path)
    startup_s = time.perf_counter() - t_start
    try:
        health = httpx.get(url + "/health").json()

        def forms(n: int) -> list[dict]:
            q = rng.choice(visible, n)
            u = rng.integers(1, n_users + 1, n)
            return [{"image_id": str(int(a)), "k": "10", "user_id": str(int(b))} for a, b in zip(q, u)]

        run_level(url, forms(30), 2)  # warm-up: connections, caches, lazy imports
        levels = {str(c): run_level(url, forms(args.requests), c, server_pid=proc.pid) for c in args.levels}
        # queries as files (decode + embed on every request), one client
        ds = data.load_fashion_mnist()
        n_file = max(50, args.requests // 4)
        ids = rng.choice(visible, n_file)
        pngs = []
        for i in ids:
            buf = io.BytesIO()
            Image.fromarray(ds.images[int(i)]).save(buf, format="PNG")
            pngs.append(buf.getvalue())
        file_level = run_level(url, [{"k": "10"} for _ in ids], 1, files=pngs, server_pid=proc.pid)
    finally:
        stop_server(proc)
    one, many = levels.get("1"), levels.get(str(max(args.levels)))
    result = {
        "n_indexed": health["images_indexed"],
        "model": health["model"],
        "index_kind": health["index_kind"],
        "server_startup_s": round(startup_s, 1),
        "levels": levels,
        "file_query_1_client": file_level,
        "targets": {
            "single_p50_le_15ms": bool(one and one["p50_ms"] is not None and one["p50_ms"] <= 15),
            "single_p99_le_50ms": bool(one and one["p99_ms"] is not None and one["p99_ms"] <= 50),
            "16_clients_ge_100_per_s": bool(many and many["searches_per_s"] >= 100),
            "zero_errors": all(v["errors"] == 0 for v in levels.values()) and file_level["errors"] == 0,
        },
        # what the machine could serve if this benchmark had both cores to itself
        "cpu_bound_searches_per_s_estimate": round(
            (os.cpu_count() or 1) * 1000 / (many["server_cpu_ms_per_request"] + many["client_cpu_ms_per_request"]), 1)
        if many else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "client and server share this machine's cores (loopback)"},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        config.write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
