"""``python -m vs_lib serve``: load an encoder, bring its index up to date, serve the app with uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config

CLI_HELP = "run the HTTP search service and web page"
DEFAULT_MODELS = ("labels", "self_supervised", "clicks")


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--model",
        default=None,
        help=f"encoder name in data/models/ or a path to a .pt file (default: the first of {', '.join(DEFAULT_MODELS)} "
        "that exists)",
    )
    parser.add_argument(
        "--index-kind",
        "--index",
        dest="index_kind",
        default="flat",
        help="vector index kind (flat, ivf, hnsw, milvus, ...; default flat)",
    )
    parser.add_argument(
        "--index-path",
        type=Path,
        default=None,
        help="index directory (default data/index/<model>-<kind>); rebuilt if made by another encoder",
    )
    parser.add_argument("--db", type=Path, default=None, help="platform database (default data/visual_search.db)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads per request (default 1: requests run in parallel instead)",
    )


def resolve_model(name: str | None) -> Path:
    """A model name (``data/models/<name>.pt``) or path → an existing file, with a clear error."""
    if name is not None:
        p = Path(name)
        if p.suffix == ".pt" and p.exists():
            return p
        p = config.models_dir() / f"{name}.pt"
        if p.exists():
            return p
        raise FileNotFoundError(f"no encoder {name!r}: expected {p} or a path to a .pt file")
    for n in DEFAULT_MODELS:
        p = config.models_dir() / f"{n}.pt"
        if p.exists():
            return p
    raise FileNotFoundError(
        f"no trained encoder in {config.models_dir()} (looked for {', '.join(n + '.pt' for n in DEFAULT_MODELS)}); "
        "train one with `python -m vs_lib train --positives labels` or pass --model PATH"
    )


def cli_main(args: argparse.Namespace) -> int:
    import faiss
    import torch
    import uvicorn

    from ..serving import SearchService
    from .app import create_app

    # one explicit setting at start-up: each request thread runs one query, so OpenMP teams
    # inside torch and FAISS would only add spinning under load
    torch.set_num_threads(max(1, int(args.torch_threads)))
    faiss.omp_set_num_threads(1)
    model_path = resolve_model(args.model)
    print(f"loading encoder {model_path}, bringing the {args.index_kind} index up to date ...", flush=True)
    service = SearchService.from_paths(
        model_path, index_kind=args.index_kind, db_path=args.db, index_path=args.index_path
    )
    h = service.health()
    print(
        f"serving {h['images_indexed']:,} images with {h['model']} ({h['index_kind']}) on "
        f"http://{args.host}:{args.port}/  (docs: /docs)",
        flush=True,
    )
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        service.close()
    return 0
