"""Execute the notebooks with papermill as reports: ``reports/NN_topic.ipynb`` + ``.html``.

``python -m vs_lib report [--profile full|smoke] [--only 03 04]`` runs them in teaching
order, each from ``notebooks/`` as its working folder, prints the time each took and
writes ``reports/summary.json``. A failing notebook is reported (its executed copy shows
the error) and the others still run; the command then exits non-zero. The last notebook, the
interview walk-through built from the others' results, is also ``reports/summary.html``: the
course's one-page summary.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from pathlib import Path

from . import config

CLI_HELP = "execute every notebook with papermill into reports/ (executed .ipynb and HTML)"
SUMMARY_NOTEBOOK = "11_interview_walkthrough"  # its HTML is also reports/summary.html


def notebooks(only: list[str] | None = None) -> list[Path]:
    paths = sorted((config.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        if not paths:
            raise ValueError(f"no notebook matches {only}")
    return paths


def run_one(src: Path, out_dir: Path, profile: str) -> dict:
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{src.stem}.partial.ipynb"
    start = time.perf_counter()
    env_before = os.environ.get("VS_PROFILE")
    os.environ["VS_PROFILE"] = profile
    try:
        pm.execute_notebook(
            str(src),
            str(partial),
            parameters={"PROFILE": profile},
            kernel_name="python3",
            cwd=str(src.parent),
            progress_bar=False,
        )
        error = None
    except Exception as e:  # papermill's PapermillExecutionError carries the cell's traceback
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        traceback.print_exc()
    finally:
        if env_before is None:
            os.environ.pop("VS_PROFILE", None)
        else:
            os.environ["VS_PROFILE"] = env_before
    seconds = time.perf_counter() - start
    result = {"notebook": src.stem, "seconds": round(seconds, 1), "ok": error is None, "error": error}
    if partial.exists():
        os.replace(partial, out_dir / f"{src.stem}.ipynb")
        nb = nbformat.read(out_dir / f"{src.stem}.ipynb", as_version=4)
        html, _ = HTMLExporter().from_notebook_node(nb)
        with config.atomic_path(out_dir / f"{src.stem}.html") as tmp:
            tmp.write_text(html, encoding="utf-8")
    return result


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="full", choices=config.PROFILES)
    parser.add_argument("--only", nargs="*", help="notebook prefixes, e.g. 03 04")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default reports/)")


def cli_main(args: argparse.Namespace) -> int:
    out_dir = args.out or (config.reports_dir() if args.profile == "full" else config.reports_dir() / "smoke")
    results = []
    total = time.perf_counter()
    for src in notebooks(args.only):
        print(f"▶ {src.stem} ({args.profile}) ...", flush=True)
        r = run_one(src, out_dir, args.profile)
        results.append(r)
        print(
            f"  {'ok' if r['ok'] else 'FAILED'} in {r['seconds']:.1f} s" + (f" — {r['error']}" if r["error"] else ""),
            flush=True,
        )
    total = time.perf_counter() - total
    config.write_json_atomic(
        out_dir / "summary.json", {"profile": args.profile, "total_seconds": round(total, 1), "notebooks": results}
    )
    print(f"\n{'notebook':32s} {'seconds':>8s}  status")
    for r in results:
        print(f"{r['notebook']:32s} {r['seconds']:8.1f}  {'ok' if r['ok'] else 'FAILED'}")
    print(f"{'total':32s} {total:8.1f}\nreports in {out_dir}, figures in {config.figures_dir()}")
    if any(r["notebook"] == SUMMARY_NOTEBOOK and r["ok"] for r in results):
        with config.atomic_path(out_dir / "summary.html") as tmp:
            tmp.write_bytes((out_dir / f"{SUMMARY_NOTEBOOK}.html").read_bytes())
        print(f"the course's one-page summary: {out_dir / 'summary.html'}")
    return 0 if all(r["ok"] for r in results) else 1
