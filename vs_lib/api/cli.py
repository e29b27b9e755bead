"""``python -m vs_lib serve``: load an encoder, bring its index up to date, serve the app with uvicorn.

Authentication is on by default: anonymous requests see public images, signed-in users
(``Authorization: Bearer <token>`` or the page's sign-in) also their own private ones.
``--demo-user NAME`` prints a short-lived token and a sign-in link for that user, so the demo
stays one command. ``--local-owner NAME`` serves as that one user with no sign-in at all —
refused unless bound to 127.0.0.1 / localhost (:func:`~vs_lib.api.security.check_bind`).

``--folder DIR`` serves the same page over a folder of the user's own images instead
(:mod:`.folder`: the folder's collection, brought up to date at start-up; 127.0.0.1 only
unless ``--allow-remote``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .. import config

CLI_HELP = "run the HTTP search service and web page"
DEFAULT_MODELS = ("labels", "self_supervised", "clicks")
DEMO_HOURS = 12.0


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
        default=None,
        help="torch intra-op threads (default 1 for the platform: requests run in parallel instead; "
        "with --folder, as many as the machine offers)",
    )
    parser.add_argument(
        "--demo-user",
        default=None,
        metavar="USERNAME",
        help=f"print a {DEMO_HOURS:g}-hour API token and a sign-in link for this user (e.g. user00001)",
    )
    parser.add_argument(
        "--local-owner",
        default=None,
        metavar="USERNAME",
        help="serve as this one user with no sign-in (only on 127.0.0.1/localhost)",
    )
    own = parser.add_argument_group("a folder of your own images (instead of the platform)")
    own.add_argument(
        "--folder", type=Path, default=None, help="serve this folder's collection (indexed or updated at start-up)"
    )
    own.add_argument("--name", default=None, help="with --folder: the collection's name (default: the folder's)")
    own.add_argument(
        "--allow-remote",
        action="store_true",
        help="with --folder: allow a non-loopback --host (anyone who can reach the port sees the images)",
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


def _user_id(db: Path | None, username: str) -> int:
    from .. import auth, database

    database.upgrade(db)
    conn = database.connect(db)
    try:
        return auth.user_id_of(conn, username)
    finally:
        conn.close()


def demo_sign_in(db: Path | None, username: str, host: str, port: int, hours: float = DEMO_HOURS) -> str:
    """Issue a short-lived token for ``username`` and return the lines telling how to sign in with it."""
    from .. import auth, database

    uid = _user_id(db, username)
    conn = database.connect(db)
    try:
        token = auth.issue(conn, uid, "token", seconds=hours * 3600, label="serve --demo-user")
    finally:
        conn.close()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return (
        f"demo sign-in as {username} (token valid {hours:g} h):\n"
        f"  open   http://{shown}:{port}/#token={token}\n"
        f"  or     curl -H 'Authorization: Bearer {token}' http://{shown}:{port}/health"
    )


def serve_app(app: Any, host: str, port: int) -> None:
    """Run ``app`` with uvicorn, after :func:`~vs_lib.api.security.check_bind` on its policy."""
    import uvicorn

    from .security import AccessPolicy, check_bind

    check_bind(host, getattr(app.state, "policy", None) or AccessPolicy())
    with _TermAsReturn():
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


class _TermAsReturn:
    """While active, SIGTERM only records itself (main thread only).

    uvicorn shuts down gracefully on SIGTERM and then raises the signal again under the
    handler it found; with the default one the process would die right there, before the
    caller's clean-up (the service's last index snapshot) runs. Under this handler the
    re-raised signal is a no-op and ``uvicorn.run`` simply returns."""

    def __enter__(self) -> _TermAsReturn:
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def cli_main(args: argparse.Namespace) -> int:
    if args.folder is not None:
        from .folder import folder_main

        return folder_main(args, serve_app)
    import faiss
    import torch

    from ..serving import SearchService
    from .app import create_app
    from .security import AccessPolicy, check_bind

    policy = AccessPolicy(local_owner=_user_id(args.db, args.local_owner)) if args.local_owner else AccessPolicy()
    try:
        check_bind(args.host, policy)  # before anything is loaded
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # one explicit setting at start-up: each request thread runs one query, so OpenMP teams
    # inside torch and FAISS would only add spinning under load
    torch.set_num_threads(max(1, int(args.torch_threads or 1)))
    faiss.omp_set_num_threads(1)
    model_path = resolve_model(args.model)
    print(f"loading encoder {model_path}, bringing the {args.index_kind} index up to date ...", flush=True)
    service = SearchService.from_paths(
        model_path, index_kind=args.index_kind, db_path=args.db, index_path=args.index_path
    )
    h = service.health()
    who = f"as {args.local_owner}, no sign-in" if args.local_owner else "sign-in by token or session"
    print(
        f"serving {h['images_indexed']:,} images with {h['model']} ({h['index_kind']}) on "
        f"http://{args.host}:{args.port}/  ({who}; docs: /docs)",
        flush=True,
    )
    if args.demo_user:
        print(demo_sign_in(args.db, args.demo_user, args.host, args.port), flush=True)
    try:
        serve_app(create_app(service, policy), args.host, args.port)
    finally:
        service.close()
    return 0
