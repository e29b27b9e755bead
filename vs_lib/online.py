"""Online evaluation with simulated users: clicks, CTR, time spent, A/B tests, position bias.

Everything measured here is **synthetic**: the users are simulated, and every row they
log says so (``synthetic = 1``, ``source = 'simulation:<name>'``).

A *system under test* is any callable ``search(query_image_id: int, k: int, user_id: int)
-> list[int]`` returning ranked image ids — the serving facade's ``search``, or
:class:`EmbeddingSearch` over precomputed embeddings.  A system may also offer
``warm(query_ids, k)`` to compute many result lists in one batch; the simulator calls it
when present.

The user model (a **position-based click model**, PBM):

- a user examines position ``i`` with probability ``examine(i) = 1 / i**eta``;
- an examined result attracts a click with probability ``attract(grade)``, growing with
  the graded relevance 0–5 of the result to the query (the documented grade table
  :data:`vs_lib.metrics.FASHION_MNIST_GRADES` plays the human rater);
- ``P(click at i) = examine(i) * attract(grade_i)``, independently per position;
- after a click the user dwells for a log-normal time whose median grows with the grade.

Because examination falls with position, raw click rates confound *where* an item was
shown with *how relevant* it is: :func:`estimate_propensity` measures the examination
curve from sessions with randomly shuffled results and :func:`click_relevance` corrects
clicks by inverse propensity weighting (IPW).

The logged clicks are what ``train`` reads as click positives (``type = 'click'`` rows:
``query_image_id → displayed_image_id``).  Queries are drawn from the **training** images by
default so that training on clicks never sees a test image.
"""
from __future__ import annotations

import argparse
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import config, metrics

CLI_HELP = "simulate users: log impressions and clicks, compare two systems (A/B)"

SearchFn = Callable[[int, int, int], Sequence[int]]
DAY = 86_400
#: interaction-table columns the simulator fills (``id`` is assigned by SQLite)
LOG_COLUMNS = ["user_id", "query_image_id", "displayed_image_id", "position", "type", "lat", "lon",
               "timestamp", "session_id", "dwell_seconds", "source", "synthetic"]


class SimulationError(ValueError):
    """A simulation asked for something impossible (unknown ids, empty pools, bad rates)."""


# ----------------------------------------------------------------------------------------
# The click model
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClickModel:
    """Position-based click model with relevance-dependent attractiveness and dwell time.

    ``attract(g) = floor + (ceiling - floor) * (2**g - 1) / (2**5 - 1)``: grade 0 results
    are clicked by mistake (``floor``), grade 5 results most of the time they are seen.
    Dwell time after a click is log-normal with median ``dwell_base + dwell_per_grade * g``
    seconds and spread ``dwell_sigma``.  ``user_sigma`` > 0 gives every user a personal
    click propensity, a log-normal multiplier with mean 1 (some people click much more than
    others): the within-user correlation that makes impressions not independent trials.
    """

    eta: float = 1.0
    floor: float = 0.02
    ceiling: float = 0.6
    dwell_base: float = 3.0
    dwell_per_grade: float = 6.0
    dwell_sigma: float = 0.6
    user_sigma: float = 0.0

    def __post_init__(self):
        if not (0 <= self.floor <= self.ceiling <= 1):
            raise SimulationError(f"need 0 <= floor <= ceiling <= 1, got floor={self.floor}, ceiling={self.ceiling}")
        if min(self.eta, self.dwell_sigma, self.dwell_base, self.dwell_per_grade, self.user_sigma) < 0:
            raise SimulationError("eta, dwell_base, dwell_per_grade, dwell_sigma and user_sigma must be >= 0")

    def examine(self, positions) -> np.ndarray:
        """Examination probability of 1-based ``positions``."""
        p = np.asarray(positions, dtype=np.float64)
        if (p < 1).any():
            raise SimulationError("positions are 1-based")
        return 1.0 / p ** self.eta

    def attract(self, grades) -> np.ndarray:
        """Click probability of an examined result of relevance ``grades`` (0–5)."""
        g = np.asarray(grades, dtype=np.float64)
        return self.floor + (self.ceiling - self.floor) * (2.0 ** g - 1) / (2.0 ** metrics.MAX_GRADE - 1)

    def click_probability(self, grades, positions=None) -> np.ndarray:
        """``examine(position) * attract(grade)``; positions default to 1..k along the last axis."""
        g = np.asarray(grades, dtype=np.float64)
        if positions is None:
            positions = np.arange(1, g.shape[-1] + 1)
        return self.examine(positions) * self.attract(g)

    def user_multipliers(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Personal click-propensity multipliers of ``n`` users (mean 1; all 1 when ``user_sigma`` = 0)."""
        if self.user_sigma == 0:
            return np.ones(n)
        return np.exp(self.user_sigma * rng.normal(size=n) - self.user_sigma ** 2 / 2)

    def dwell_median(self, grades) -> np.ndarray:
        return self.dwell_base + self.dwell_per_grade * np.asarray(grades, dtype=np.float64)


# ----------------------------------------------------------------------------------------
# Systems under test
# ----------------------------------------------------------------------------------------


class EmbeddingSearch:
    """Exact cosine search over precomputed embeddings, as a system under test.

    ``embeddings`` ``(n, d)`` float32 L2-normalised for the images ``ids`` (queries and
    gallery); the gallery is ``gallery_ids`` (default: all of ``ids``).  A query is never
    its own result.  Results are cached per query; :meth:`warm` fills the cache in batches.
    """

    def __init__(self, embeddings: np.ndarray, ids: Sequence[int], gallery_ids: Sequence[int] | None = None,
                 name: str = "embedding-search"):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.ids = np.asarray(ids, dtype=np.int64)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.ids):
            raise SimulationError(f"need (n, d) embeddings with one id each, got {self.embeddings.shape} and {self.ids.shape}")
        self._row = pd.Index(self.ids)
        g = self.ids if gallery_ids is None else np.asarray(gallery_ids, dtype=np.int64)
        rows = self._row.get_indexer(g)
        if (rows < 0).any():
            raise SimulationError(f"{int((rows < 0).sum())} gallery ids have no embedding")
        self.gallery_ids = g
        self.gallery_embeddings = self.embeddings[rows]
        self.name = name
        self._cache: dict[int, np.ndarray] = {}
        self._cache_k = 0

    def warm(self, query_ids: Sequence[int], k: int) -> None:
        """Compute and cache the top ``k`` of many queries in one batched matrix product."""
        from . import evaluate

        if k > self._cache_k:
            self._cache, self._cache_k = {}, k
        todo = np.unique(np.asarray([q for q in query_ids if int(q) not in self._cache], dtype=np.int64))
        if not todo.size:
            return
        rows = self._rows(todo)
        _, pos = evaluate.exact_topk(self.embeddings[rows], self.gallery_embeddings, self._cache_k,
                                     query_ids=todo, gallery_ids=self.gallery_ids)
        for q, p in zip(todo, pos):
            self._cache[int(q)] = self.gallery_ids[p]

    def _rows(self, query_ids: np.ndarray) -> np.ndarray:
        rows = self._row.get_indexer(query_ids)
        if (rows < 0).any():
            raise SimulationError(f"unknown query image id(s) {query_ids[rows < 0][:5].tolist()}")
        return rows

    def __call__(self, query_image_id: int, k: int, user_id: int | None = None) -> list[int]:
        q = int(query_image_id)
        if k > self._cache_k or q not in self._cache:
            self.warm([q], max(k, self._cache_k))
        return self._cache[q][:k].tolist()


# ----------------------------------------------------------------------------------------
# Simulation
# ----------------------------------------------------------------------------------------


def default_start_time() -> int:
    """Simulated days start where the database's seed log ends (90 days after uploads)."""
    from . import data

    return int(data.EPOCH_START + 2 * data.YEAR + 90 * DAY)


def _user_locations(users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User ids and (lat, lon) from a users DataFrame (city → coordinates) or bare ids."""
    from . import data

    if isinstance(users, pd.DataFrame):
        ids = users["id"].to_numpy(dtype=np.int64)
        coords = {c[0]: (c[2], c[3]) for c in data.CITIES}
        cities = users["city"] if "city" in users else pd.Series([None] * len(users))
        lat = np.array([coords.get(c, (np.nan, np.nan))[0] for c in cities], dtype=np.float64)
        lon = np.array([coords.get(c, (np.nan, np.nan))[1] for c in cities], dtype=np.float64)
    else:
        ids = np.asarray(users, dtype=np.int64)
        lat = np.full(len(ids), np.nan)
        lon = np.full(len(ids), np.nan)
    if ids.size == 0:
        raise SimulationError("no users to simulate")
    return ids, lat, lon


def simulate(
    system: SearchFn,
    labels: np.ndarray,
    users,
    query_pool: Sequence[int],
    *,
    k: int = 10,
    n_days: int = 7,
    sessions_per_user_day: float = 1.0,
    click_model: ClickModel | None = None,
    randomize: float = 0.0,
    name: str = "sim",
    start_time: int | None = None,
    seed: int = 0,
    grades: np.ndarray | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Simulate ``n_days`` of users searching with ``system`` and return the interaction log.

    ``labels``: class label of every image id (``labels[image_id]``, e.g. the 70,000
    Fashion-MNIST labels) — the hidden truth behind the grades.  ``users``: the users
    table (``id``, ``city``) or an array of user ids.  Each user issues a Poisson number
    of sessions per day (mean ``sessions_per_user_day``), each a query drawn uniformly from
    ``query_pool``; the system shows its top ``k``; a ``randomize`` share of sessions
    shows the same k results in a random order (the intervention that measures position
    bias).

    Returns one row per impression and per click with the interaction-table columns
    (:data:`LOG_COLUMNS`) plus ``grade``, ``day`` and ``randomized`` for analysis.
    """
    cm = click_model or ClickModel()
    table = metrics.FASHION_MNIST_GRADES if grades is None else np.asarray(grades)
    labels = np.asarray(labels, dtype=np.int64)
    pool = np.asarray(query_pool, dtype=np.int64)
    if pool.size == 0:
        raise SimulationError("query_pool is empty")
    if not 0 <= randomize <= 1:
        raise SimulationError(f"randomize is a share of sessions in [0, 1], got {randomize}")
    if n_days < 1 or sessions_per_user_day <= 0 or k < 1:
        raise SimulationError("need n_days >= 1, sessions_per_user_day > 0 and k >= 1")
    rng = np.random.default_rng(seed)
    user_ids, lat, lon = _user_locations(users)
    user_mult = cm.user_multipliers(len(user_ids), np.random.default_rng([seed, 1]))
    t0 = default_start_time() if start_time is None else int(start_time)

    # the plan: sessions (user, day, query, time)
    counts = rng.poisson(sessions_per_user_day, size=(len(user_ids), n_days))
    u_idx, day = np.nonzero(counts)
    reps = counts[u_idx, day]
    u_idx, day = np.repeat(u_idx, reps), np.repeat(day, reps)
    n = len(u_idx)
    if n == 0:
        raise SimulationError("the plan has no sessions; raise sessions_per_user_day or the number of users")
    ts = t0 + day * DAY + rng.integers(0, DAY - 600, n)
    order = np.argsort(ts, kind="stable")
    u_idx, day, ts = u_idx[order], day[order], ts[order]
    queries = pool[rng.integers(0, len(pool), n)]
    shuffled = rng.random(n) < randomize

    # the system's answers
    if hasattr(system, "warm"):
        system.warm(np.unique(queries), k)
    sessions = range(n)
    if progress:
        from tqdm.auto import tqdm

        sessions = tqdm(sessions, desc=f"simulate {name}", unit="session")
    shown = np.full((n, k), -1, dtype=np.int64)
    for s in sessions:
        res = list(system(int(queries[s]), k, int(user_ids[u_idx[s]])))[:k]
        shown[s, : len(res)] = res
    if shown.max() >= len(labels):
        raise SimulationError(f"the system returned image id {shown.max()} with no label (labels has {len(labels)})")
    for s in np.flatnonzero(shuffled):  # random order within the shown results
        m = int((shown[s] >= 0).sum())
        shown[s, :m] = shown[s, :m][rng.permutation(m)]

    # the user: examine, click, dwell
    valid = shown >= 0
    g = np.where(valid, table[labels[queries][:, None], labels[np.maximum(shown, 0)]], 0)
    p_click = np.minimum(1.0, cm.click_probability(g) * user_mult[u_idx][:, None]) * valid
    clicked = rng.random((n, k)) < p_click
    dwell = np.exp(np.log(cm.dwell_median(g)) + cm.dwell_sigma * rng.normal(size=(n, k)))

    s_idx, pos0 = np.nonzero(valid)
    imp = pd.DataFrame({
        "user_id": user_ids[u_idx[s_idx]],
        "query_image_id": queries[s_idx],
        "displayed_image_id": shown[s_idx, pos0],
        "position": pos0 + 1,
        "type": "impression",
        "lat": lat[u_idx[s_idx]],
        "lon": lon[u_idx[s_idx]],
        "timestamp": ts[s_idx] + pos0,
        "session_id": s_idx + 1,
        "dwell_seconds": np.nan,
        "grade": g[s_idx, pos0],
        "day": day[s_idx],
        "randomized": shuffled[s_idx],
    })
    c_s, c_pos0 = np.nonzero(clicked)
    clk = pd.DataFrame({
        "user_id": user_ids[u_idx[c_s]],
        "query_image_id": queries[c_s],
        "displayed_image_id": shown[c_s, c_pos0],
        "position": c_pos0 + 1,
        "type": "click",
        "lat": lat[u_idx[c_s]],
        "lon": lon[u_idx[c_s]],
        "timestamp": ts[c_s] + c_pos0 + 2 + (c_pos0 + 1) * 3,
        "session_id": c_s + 1,
        "dwell_seconds": np.round(dwell[c_s, c_pos0], 2),
        "grade": g[c_s, c_pos0],
        "day": day[c_s],
        "randomized": shuffled[c_s],
    })
    log = pd.concat([imp, clk], ignore_index=True).sort_values(["session_id", "position", "type"], kind="stable")
    log["source"] = f"simulation:{name}"
    log["synthetic"] = 1
    log.attrs.update({"n_users": len(user_ids), "n_days": n_days, "k": k, "name": name})
    return log.reset_index(drop=True)


def log_interactions(log: pd.DataFrame, conn: sqlite3.Connection | None = None, replace: bool = False) -> int:
    """Append a simulated log to the ``interactions`` table (one transaction); returns rows written.

    Session ids are shifted past the largest one already stored, so sessions stay
    distinct across runs.  ``replace=True`` first deletes the rows of the same
    ``source`` values (so re-running a notebook does not pile up copies).  Unknown user or
    image ids violate the foreign keys and roll the whole log back, deletions included.
    """
    from . import data

    missing = [c for c in LOG_COLUMNS if c not in log.columns]
    if missing:
        raise SimulationError(f"log lacks interaction columns {missing}")
    if not log["source"].astype(str).str.startswith("simulation:").all() or not (log["synthetic"] == 1).all():
        raise SimulationError("only simulated, synthetic rows (source 'simulation:<name>', synthetic=1) are logged here")
    own = conn is None
    conn = conn or data.connect()
    try:
        offset = conn.execute("SELECT COALESCE(MAX(session_id), 0) FROM interactions").fetchone()[0]
        rows = log[LOG_COLUMNS].copy()
        rows["session_id"] = rows["session_id"] + int(offset)
        records = [
            tuple(None if (isinstance(v, float) and math.isnan(v)) else (v.item() if hasattr(v, "item") else v) for v in r)
            for r in rows.itertuples(index=False, name=None)
        ]
        with conn:
            if replace:
                sources = sorted(set(map(str, log["source"])))
                conn.execute(f"DELETE FROM interactions WHERE source IN ({', '.join('?' * len(sources))})", sources)
            conn.executemany(
                f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) VALUES ({', '.join('?' * len(LOG_COLUMNS))})",
                records,
            )
        return len(records)
    finally:
        if own:
            conn.close()


# ----------------------------------------------------------------------------------------
# Online metrics
# ----------------------------------------------------------------------------------------


def _split(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return log[log["type"] == "impression"], log[log["type"] == "click"]


def summarize(log: pd.DataFrame, n_users: int | None = None) -> dict:
    """CTR, clicks per query, share of sessions with a click, and time spent.

    Time spent is the dwell after clicks, averaged over **all** simulated users (idle
    ones count as zero) per day and per 7-day week; ``n_users`` defaults to the number
    recorded by :func:`simulate`.
    """
    imp, clk = _split(log)
    n_users = n_users or log.attrs.get("n_users") or log["user_id"].nunique()
    n_days = log.attrs.get("n_days") or int(log["day"].max()) + 1
    sessions = log["session_id"].nunique()
    total_dwell = float(clk["dwell_seconds"].sum())
    return {
        "sessions": int(sessions),
        "impressions": int(len(imp)),
        "clicks": int(len(clk)),
        "ctr": len(clk) / len(imp) if len(imp) else 0.0,
        "clicks_per_query": len(clk) / sessions if sessions else 0.0,
        "sessions_with_click": clk["session_id"].nunique() / sessions if sessions else 0.0,
        "mean_dwell_per_click_s": total_dwell / len(clk) if len(clk) else 0.0,
        "time_spent_per_user_day_s": total_dwell / (n_users * n_days),
        "time_spent_per_user_week_s": total_dwell / (n_users * n_days) * 7,
    }


def daily(log: pd.DataFrame, period_days: int = 1) -> pd.DataFrame:
    """Per day (or per ``period_days`` block, e.g. 7 for weeks): sessions, CTR, time spent per user."""
    n_users = log.attrs.get("n_users") or log["user_id"].nunique()
    period = log["day"] // period_days
    imp = log[log["type"] == "impression"].groupby(period[log["type"] == "impression"]).size()
    clk = log[log["type"] == "click"].groupby(period[log["type"] == "click"])
    out = pd.DataFrame({
        "sessions": log.groupby(period)["session_id"].nunique(),
        "impressions": imp,
        "clicks": clk.size(),
        "dwell_s": clk["dwell_seconds"].sum(),
    }).fillna(0)
    out["ctr"] = out["clicks"] / out["impressions"]
    out["time_spent_per_user_s"] = out["dwell_s"] / n_users
    out.index.name = "day" if period_days == 1 else f"period_{period_days}d"
    return out


def ctr_by_position(log: pd.DataFrame) -> pd.DataFrame:
    """Impressions, clicks and CTR at each position."""
    imp, clk = _split(log)
    out = pd.DataFrame({"impressions": imp.groupby("position").size(), "clicks": clk.groupby("position").size()}).fillna(0)
    out["ctr"] = out["clicks"] / out["impressions"]
    return out


# ----------------------------------------------------------------------------------------
# A/B test
# ----------------------------------------------------------------------------------------


def assign_users(user_ids: Sequence[int], share_b: float = 0.5, seed: int = 0) -> pd.Series:
    """Random split of users into variants ``"A"`` / ``"B"`` (a user always sees one system)."""
    ids = np.asarray(user_ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return pd.Series(np.where(rng.random(len(ids)) < share_b, "B", "A"), index=pd.Index(ids, name="user_id"),
                     name="variant")


def two_proportion_ztest(clicks_a: int, n_a: int, clicks_b: int, n_b: int, alpha: float = 0.05) -> dict:
    """Two-sided z-test of ``p_b = p_a`` (pooled standard error) and a Wald interval of ``p_b − p_a``.

    Treats every impression as an independent trial; impressions of one session or user
    are correlated, so prefer the user-level bootstrap (:func:`bootstrap_ctr_difference`)
    for the interval when they differ.
    """
    from scipy.stats import norm

    if min(n_a, n_b) <= 0:
        raise ValueError("both groups need at least one impression")
    pa, pb = clicks_a / n_a, clicks_b / n_b
    pooled = (clicks_a + clicks_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (pb - pa) / se0 if se0 > 0 else 0.0
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    zc = norm.ppf(1 - alpha / 2)
    return {"ctr_a": pa, "ctr_b": pb, "difference": pb - pa, "relative_lift": (pb - pa) / pa if pa else float("nan"),
            "z": z, "p_value": float(2 * norm.sf(abs(z))), "ci_low": pb - pa - zc * se, "ci_high": pb - pa + zc * se}


def bootstrap_ctr_difference(log: pd.DataFrame, variant: pd.Series, n_boot: int = 2000, ci: float = 0.95,
                             seed: int = 0) -> dict:
    """Bootstrap interval of CTR(B) − CTR(A), resampling **users** within each variant.

    Resampling users keeps each user's impressions together, so correlation within users
    and sessions widens the interval as it should.
    """
    imp, clk = _split(log)
    per_user = pd.DataFrame({"impressions": imp.groupby("user_id").size(), "clicks": clk.groupby("user_id").size()})
    per_user = per_user.fillna(0).join(variant, how="inner")
    rng = np.random.default_rng(seed)
    ctrs = {}
    for v in ("A", "B"):
        grp = per_user[per_user["variant"] == v]
        if grp.empty:
            raise ValueError(f"variant {v} has no users with impressions")
        w = rng.multinomial(len(grp), np.full(len(grp), 1 / len(grp)), size=n_boot)
        ctrs[v] = (w @ grp["clicks"].to_numpy()) / (w @ grp["impressions"].to_numpy())
    diff = ctrs["B"] - ctrs["A"]
    lo, hi = np.quantile(diff, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"ci_low": float(lo), "ci_high": float(hi), "n_boot": n_boot,
            "p_value_bootstrap": float(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean())))}


def sessions_needed(ctr_a: float, relative_lift: float, k: int = 10, alpha: float = 0.05, power: float = 0.8,
                    design_effect: float = 1.0) -> int:
    """Sessions per variant for a two-sided two-proportion test to detect ``relative_lift``.

    Classic sample size for proportions (pooled variance under H0) in impressions, divided
    by the ``k`` impressions a session shows, times a ``design_effect`` ≥ 1 for the
    correlation of impressions within a session (1 = independent).
    """
    from scipy.stats import norm

    p1 = ctr_a
    p2 = ctr_a * (1 + relative_lift)
    if not (0 < p1 < 1 and 0 < p2 < 1) or relative_lift == 0:
        raise ValueError(f"need 0 < CTR < 1 before and after a non-zero lift, got {p1} -> {p2}")
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    pbar = (p1 + p2) / 2
    n_imp = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    return int(math.ceil(n_imp * design_effect / k))


@dataclass
class ABResult:
    log: pd.DataFrame
    variant: pd.Series
    summary: pd.DataFrame  # per variant: summarize()
    test: dict  # z-test + bootstrap interval
    names: dict = field(default_factory=dict)


def ab_test(system_a: SearchFn, system_b: SearchFn, labels, users, query_pool, *, share_b: float = 0.5,
            seed: int = 0, n_boot: int = 2000, names: Mapping[str, str] | None = None, **simulate_kwargs) -> ABResult:
    """Split users at random, let each variant's users use its system, and test the CTR difference."""
    user_ids, _, _ = _user_locations(users)
    variant = assign_users(user_ids, share_b, seed)
    names = dict(names or {"A": getattr(system_a, "name", "A"), "B": getattr(system_b, "name", "B")})
    logs = []
    for i, (v, system) in enumerate((("A", system_a), ("B", system_b))):
        members = variant.index[variant == v].to_numpy()
        group_users = users[users["id"].isin(members)] if isinstance(users, pd.DataFrame) else members
        lg = simulate(system, labels, group_users, query_pool, seed=seed * 1000 + i + 1,
                      name=f"ab-{v}-{names[v]}", **simulate_kwargs)
        lg["variant"] = v
        lg["session_id"] += 0 if not logs else int(logs[-1]["session_id"].max())
        logs.append(lg)
    summary = pd.DataFrame({v: summarize(lg) for v, lg in zip("AB", logs)}).T
    log = pd.concat(logs, ignore_index=True)
    log.attrs.update(logs[0].attrs)
    log.attrs["n_users"] = len(user_ids)
    s = summary
    test = two_proportion_ztest(int(s.loc["A", "clicks"]), int(s.loc["A", "impressions"]),
                                int(s.loc["B", "clicks"]), int(s.loc["B", "impressions"]))
    boot = bootstrap_ctr_difference(log, variant, n_boot=n_boot, seed=seed)
    test.update({"bootstrap_ci_low": boot["ci_low"], "bootstrap_ci_high": boot["ci_high"],
                 "users_a": int((variant == "A").sum()), "users_b": int((variant == "B").sum())})
    return ABResult(log, variant, summary, test, names)


# ----------------------------------------------------------------------------------------
# Position bias
# ----------------------------------------------------------------------------------------


def estimate_propensity(log: pd.DataFrame) -> pd.Series:
    """Examination propensity per position, relative to position 1, from randomised sessions.

    In sessions whose results were shuffled, relevance is independent of position, so the
    CTR at position i is proportional to the examination probability there.
    """
    rand = log[log["randomized"]] if "randomized" in log else log.iloc[0:0]
    if rand.empty:
        raise SimulationError("no randomised sessions in the log; simulate with randomize > 0")
    ctr = ctr_by_position(rand)["ctr"]
    if ctr.iloc[0] <= 0:
        raise SimulationError("no clicks at position 1 in the randomised sessions; simulate more sessions")
    return (ctr / ctr.iloc[0]).rename("propensity")


def click_relevance(log: pd.DataFrame, propensity: pd.Series | None = None, by: str | Sequence[str] = "grade",
                    include_randomized: bool = False) -> pd.DataFrame:
    """Click-based relevance estimate per group: naive CTR and, given propensities, the IPW one.

    naive = clicks / impressions; IPW = Σ_clicks 1 / propensity(position) / impressions, an
    unbiased estimate of the click rate the group would get **if examined at position 1**.
    """
    lg = log if include_randomized or "randomized" not in log else log[~log["randomized"]]
    imp, clk = _split(lg)
    out = pd.DataFrame({"impressions": imp.groupby(by).size(), "clicks": clk.groupby(by).size()}).fillna(0)
    out["naive"] = out["clicks"] / out["impressions"]
    if propensity is not None:
        w = 1.0 / clk["position"].map(propensity).to_numpy()
        if np.isnan(w).any():
            raise SimulationError("propensity lacks some logged positions")
        out["ipw"] = pd.Series(w, index=clk.index).groupby([clk[b] for b in ([by] if isinstance(by, str) else by)]).sum() / out["impressions"]
        out["ipw"] = out["ipw"].fillna(0.0)
    return out


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _system_from_spec(spec: str, ds, gallery_ids: np.ndarray, embed_ids: np.ndarray) -> EmbeddingSearch:
    from . import models

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
    parser.add_argument("--system", default="baseline:pixels",
                        help="system A: 'baseline:<pixels|pca|untrained|efficientnet>', a model name in the models folder, or a .pt path")
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


def cli_main(args) -> int:
    from . import data

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
        sys_a = _system_from_spec(args.system, ds, gallery, gallery)
        if args.compare:
            sys_b = _system_from_spec(args.compare, ds, gallery, gallery)
            res = ab_test(sys_a, sys_b, ds.labels, users, pool, seed=args.seed, **kw)
            log = res.log
            print(res.summary[["sessions", "impressions", "clicks", "ctr", "clicks_per_query",
                               "time_spent_per_user_day_s"]].to_string())
            t = res.test
            print(f"CTR B - A = {t['difference']:+.4f} ({t['relative_lift']:+.1%}); z = {t['z']:.2f}, "
                  f"p = {t['p_value']:.3g}; 95% CI (users bootstrap) [{t['bootstrap_ci_low']:+.4f}, {t['bootstrap_ci_high']:+.4f}]")
            log["source"] = f"simulation:{args.name}"
        else:
            log = simulate(sys_a, ds.labels, users, pool, name=args.name, seed=args.seed, progress=True, **kw)
            for key, v in summarize(log).items():
                print(f"  {key:28s} {v:,.4f}" if isinstance(v, float) else f"  {key:28s} {v:,}")
        if args.dry_run:
            print("dry run: nothing written")
        else:
            n = log_interactions(log, conn)
            print(f"logged {n:,} synthetic interactions (source 'simulation:{args.name}') into {config.db_path()}")
    finally:
        conn.close()
    return 0
