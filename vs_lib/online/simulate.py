"""The simulation of users: sessions, the results a system shows them, their clicks.

A *system under test* (:class:`SearchSystem`) is any callable ``system(query_image_id: int,
k: int, user_id: int) -> list[int]`` returning ranked image ids; the course's is
:class:`~vs_lib.online.systems.ServiceSearch`, the serving facade's ``search_ids``.  A system
may also offer ``warm(query_ids, k)`` to prepare many result lists in one batch; the
simulator calls it when present.  :func:`simulate` returns the log of impressions and clicks
in the ``interactions`` table's columns (:mod:`.logstore` keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .. import metrics
from .clicks import ClickModel, SimulationError

DAY = 86_400
#: interaction-table columns the simulator fills (``id`` is assigned by SQLite)
LOG_COLUMNS = [
    "user_id",
    "query_image_id",
    "displayed_image_id",
    "position",
    "type",
    "lat",
    "lon",
    "timestamp",
    "session_id",
    "dwell_seconds",
    "source",
    "synthetic",
]
#: who uses the system: the users table (``id``, ``city``) or bare user ids
Users: TypeAlias = pd.DataFrame | np.ndarray | Sequence[int]


class SearchSystem(Protocol):
    """A ranking under test: ``system(query_image_id, k, user_id)`` → up to ``k`` image ids, best first."""

    def __call__(self, query_image_id: int, k: int, user_id: int) -> Sequence[int]: ...


def default_start_time() -> int:
    """Simulated days start where the database's seed log ends (90 days after uploads)."""
    from .. import data

    return int(data.EPOCH_START + 2 * data.YEAR + 90 * DAY)


def user_locations(users: Users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User ids and (lat, lon) from a users DataFrame (city → coordinates) or bare ids."""
    from .. import data

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


@dataclass(frozen=True)
class _Sessions:
    """The plan of a simulation, one entry per session, in time order."""

    user_row: np.ndarray  # (n,) row in the users arrays
    day: np.ndarray  # (n,) 0-based day
    timestamp: np.ndarray  # (n,) unix seconds
    query: np.ndarray  # (n,) query image id
    randomized: np.ndarray  # (n,) bool: results shown in random order


def _plan_sessions(
    n_users: int,
    pool: np.ndarray,
    n_days: int,
    per_user_day: float,
    randomize: float,
    t0: int,
    rng: np.random.Generator,
) -> _Sessions:
    """A Poisson number of sessions per user and day, at random times, each with a random query."""
    counts = rng.poisson(per_user_day, size=(n_users, n_days))
    u_idx, day = np.nonzero(counts)
    reps = counts[u_idx, day]
    u_idx, day = np.repeat(u_idx, reps), np.repeat(day, reps)
    n = len(u_idx)
    if n == 0:
        raise SimulationError("the plan has no sessions; raise sessions_per_user_day or the number of users")
    ts = t0 + day * DAY + rng.integers(0, DAY - 600, n)
    order = np.argsort(ts, kind="stable")
    queries = pool[rng.integers(0, len(pool), n)]
    shuffled = rng.random(n) < randomize
    return _Sessions(u_idx[order], day[order], ts[order], queries, shuffled)


def _shown_results(
    system: SearchSystem, plan: _Sessions, user_ids: np.ndarray, k: int, rng: np.random.Generator, progress: bool
) -> np.ndarray:
    """(n, k) image ids each session shows (-1: the system returned fewer), shuffled where randomised."""
    warm = getattr(system, "warm", None)
    if callable(warm):
        warm(np.unique(plan.query), k)
    sessions = range(len(plan.query))
    if progress:
        from tqdm.auto import tqdm

        sessions = tqdm(sessions, desc="simulate", unit="session")
    shown = np.full((len(plan.query), k), -1, dtype=np.int64)
    for s in sessions:
        res = list(system(int(plan.query[s]), k, int(user_ids[plan.user_row[s]])))[:k]
        shown[s, : len(res)] = res
    for row in np.flatnonzero(plan.randomized):  # random order within the shown results
        m = int((shown[row] >= 0).sum())
        shown[row, :m] = shown[row, :m][rng.permutation(m)]
    return shown


def _log_rows(
    kind: str,
    sessions: np.ndarray,
    pos0: np.ndarray,
    plan: _Sessions,
    shown: np.ndarray,
    grades: np.ndarray,
    user_ids: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
) -> pd.DataFrame:
    """Log rows of one ``kind`` (impression or click) at (session, 0-based position) pairs."""
    users = plan.user_row[sessions]
    return pd.DataFrame(
        {
            "user_id": user_ids[users],
            "query_image_id": plan.query[sessions],
            "displayed_image_id": shown[sessions, pos0],
            "position": pos0 + 1,
            "type": kind,
            "lat": lat[users],
            "lon": lon[users],
            "timestamp": plan.timestamp[sessions] + pos0 + (0 if kind == "impression" else 2 + (pos0 + 1) * 3),
            "session_id": sessions + 1,
            "grade": grades[sessions, pos0],
            "day": plan.day[sessions],
            "randomized": plan.randomized[sessions],
        }
    )


def simulate(
    system: SearchSystem,
    labels: ArrayLike,
    users: Users,
    query_pool: ArrayLike,
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
    bias).  The user examines, clicks and dwells by ``click_model``.

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
    user_ids, lat, lon = user_locations(users)
    user_mult = cm.user_multipliers(len(user_ids), np.random.default_rng([seed, 1]))
    t0 = default_start_time() if start_time is None else int(start_time)
    plan = _plan_sessions(len(user_ids), pool, n_days, sessions_per_user_day, randomize, t0, rng)
    shown = _shown_results(system, plan, user_ids, k, rng, progress)
    if shown.max() >= len(labels):
        raise SimulationError(f"the system returned image id {shown.max()} with no label (labels has {len(labels)})")

    # the user: examine, click, dwell
    valid = shown >= 0
    g = np.where(valid, table[labels[plan.query][:, None], labels[np.maximum(shown, 0)]], 0)
    clicked = cm.draw_clicks(g, user_mult[plan.user_row][:, None], rng) & valid
    dwell = np.exp(np.log(cm.dwell_median(g)) + cm.dwell_sigma * rng.normal(size=shown.shape))

    i_s, i_pos0 = np.nonzero(valid)
    imp = _log_rows("impression", i_s, i_pos0, plan, shown, g, user_ids, lat, lon)
    imp["dwell_seconds"] = np.nan
    c_s, c_pos0 = np.nonzero(clicked)
    clk = _log_rows("click", c_s, c_pos0, plan, shown, g, user_ids, lat, lon)
    clk["dwell_seconds"] = np.round(dwell[c_s, c_pos0], 2)
    log = pd.concat([imp, clk], ignore_index=True).sort_values(["session_id", "position", "type"], kind="stable")
    log["source"] = f"simulation:{name}"
    log["synthetic"] = 1
    log.attrs.update({"n_users": len(user_ids), "n_days": n_days, "k": k, "name": name})
    return log.reset_index(drop=True)
