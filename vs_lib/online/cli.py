"""``python -m vs_lib simulate``: simulate users of one system, or an A/B test of two, and log them.

Both systems rank through the serving facade (:class:`~vs_lib.online.systems.ServiceSearch`)
over every corpus image of the platform; queries are public training images, so that the
logged clicks can serve as training positives.  The log goes to a simulated-interactions
database (default ``data/simulations/<name>.db``), never into the platform database.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import config
from .abtest import ABResult, ab_test
from .analysis import summarize
from .clicks import SimulationError
from .logstore import log_interactions, simulation_db_path
from .simulate import simulate
from .systems import ServiceSearch, visible_queries

if TYPE_CHECKING:
    from ..data import FashionMNIST

CLI_HELP = "simulate users: log impressions and clicks, compare two systems (A/B)"


def _system_from_spec(spec: str, ds: FashionMNIST, ids: np.ndarray) -> ServiceSearch:
    """The search service over ``ids`` for an encoder named by ``spec``."""
    from .. import evaluate, models

    if spec.startswith("baseline:"):
        enc = models.baseline_encoder(spec.split(":", 1)[1], train_images=ds.train_images)
    else:
        path = Path(spec)
        if not path.exists():
            path = config.models_dir() / f"{spec}.pt"
        enc = models.load_encoder(path)
    emb = evaluate.cached_embed(enc, ds.images[ids])
    return ServiceSearch.from_embeddings(enc, emb, ids, db_path=config.db_path(), name=spec)


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--system",
        default="baseline:pixels",
        help="system A: 'baseline:<pixels|pca|untrained|efficientnet>', a model name in the models folder, or a .pt path",
    )
    parser.add_argument("--compare", default=None, help="system B: run an A/B test against it")
    parser.add_argument("--users", type=int, default=1000, help="simulated users (taken from the users table)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--sessions-per-day", type=float, default=1.0, help="mean sessions per user per day")
    parser.add_argument("-k", "--k", type=int, default=10, help="results shown per query")
    parser.add_argument("--randomize", type=float, default=0.0, help="share of sessions shown in random order")
    parser.add_argument("--queries", type=int, default=5000, help="size of the pool of training images used as queries")
    parser.add_argument("--name", default="cli", help="logged as source 'simulation:<name>'")
    parser.add_argument(
        "--log", type=Path, default=None, help="simulated-interactions database (default: data/simulations/<name>.db)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="write nothing")


def _print_ab(res: ABResult) -> None:
    columns = ["sessions", "impressions", "clicks", "ctr", "clicks_per_query", "time_spent_per_user_day_s"]
    print(res.summary[columns].to_string())
    t = res.test
    print(
        f"CTR B - A = {t.difference:+.4f} ({t.relative_lift:+.1%}); z = {t.z:.2f}, p = {t.p_value:.3g}; "
        f"95% CI (users bootstrap) [{t.bootstrap_ci_low:+.4f}, {t.bootstrap_ci_high:+.4f}]"
    )


def cli_main(args: argparse.Namespace) -> int:
    from .. import data, models
    from ..index import storage_keys

    log_path = Path(args.log) if args.log else simulation_db_path(args.name)
    ds = data.load_fashion_mnist()
    users = data.read_table("users")
    if args.users > len(users):
        raise SimulationError(f"asked for {args.users} users but the database has {len(users)}")
    users = users.sample(args.users, random_state=args.seed) if args.users < len(users) else users
    rng = np.random.default_rng(args.seed)
    with contextlib.closing(data.connect(readonly=True)) as conn:
        ids, keys = storage_keys(conn)
    ids = ids[[data.is_corpus_key(key) for key in keys]]  # the platform's corpus images: the gallery
    public_train = visible_queries(ids[np.isin(ids, ds.train_ids)])
    pool = np.sort(rng.choice(public_train, min(args.queries, len(public_train)), replace=False))
    kw = dict(k=args.k, n_days=args.days, sessions_per_user_day=args.sessions_per_day, randomize=args.randomize)
    with contextlib.ExitStack() as stack:
        # this process is ours: one thread setting for all the embedding it does
        with models.torch_threads():
            sys_a = stack.enter_context(_system_from_spec(args.system, ds, ids))
            sys_b = stack.enter_context(_system_from_spec(args.compare, ds, ids)) if args.compare else None
        if sys_b is not None:
            res = ab_test(sys_a, sys_b, ds.labels, users, pool, seed=args.seed, **kw)
            _print_ab(res)
            log = res.log
            log["source"] = f"simulation:{args.name}"
        else:
            log = simulate(sys_a, ds.labels, users, pool, name=args.name, seed=args.seed, progress=True, **kw)
            for key, v in asdict(summarize(log)).items():
                print(f"  {key:28s} {v:,.4f}" if isinstance(v, float) else f"  {key:28s} {v:,}")
    if args.dry_run:
        print("dry run: nothing written")
    else:
        n = log_interactions(log, log_path)
        print(f"logged {n:,} synthetic interactions (source 'simulation:{args.name}') into {log_path}")
    return 0
