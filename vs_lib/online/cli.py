"""``python -m vs_lib simulate``: simulate users of one system, or an A/B test of two, and log them."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import config
from .abtest import ABResult, ab_test
from .analysis import summarize
from .clicks import SimulationError
from .simulate import EmbeddingSearch, log_interactions, simulate

if TYPE_CHECKING:
    from ..data import FashionMNIST

CLI_HELP = "simulate users: log impressions and clicks, compare two systems (A/B)"


def _system_from_spec(spec: str, ds: FashionMNIST, gallery_ids: np.ndarray, embed_ids: np.ndarray) -> EmbeddingSearch:
    from .. import models

    if spec.startswith("baseline:"):
        enc = models.baseline_encoder(spec.split(":", 1)[1], train_images=ds.train_images)
    else:
        path = Path(spec)
        if not path.exists():
            path = config.models_dir() / f"{spec}.pt"
        enc = models.load_encoder(path)
    emb = enc.embed(ds.images[embed_ids], batch_size=512, progress=True)
    return EmbeddingSearch(emb, embed_ids, gallery_ids, name=spec)


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="do not write the log to the database")


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

    ds = data.load_fashion_mnist()
    conn = data.connect()
    try:
        users = data.read_table("users", conn)
        if args.users > len(users):
            raise SimulationError(f"asked for {args.users} users but the database has {len(users)}")
        users = users.sample(args.users, random_state=args.seed) if args.users < len(users) else users
        rng = np.random.default_rng(args.seed)
        gallery = ds.train_ids
        pool = np.sort(rng.choice(gallery, min(args.queries, len(gallery)), replace=False))
        kw = dict(k=args.k, n_days=args.days, sessions_per_user_day=args.sessions_per_day, randomize=args.randomize)
        # this process is ours: one thread setting for all the embedding it does
        with models.torch_threads():
            sys_a = _system_from_spec(args.system, ds, gallery, gallery)
            sys_b = _system_from_spec(args.compare, ds, gallery, gallery) if args.compare else None
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
            n = log_interactions(log, conn)
            print(f"logged {n:,} synthetic interactions (source 'simulation:{args.name}') into {config.db_path()}")
    finally:
        conn.close()
    return 0
