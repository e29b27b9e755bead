"""What a click log says: online metrics, and the position bias hidden in raw clicks.

:func:`summarize` gives the online metrics of a log (CTR = clicks / impressions, clicks per
query, time spent per user); :func:`daily` the same per day or week.  Because examination
falls with position, raw click rates confound *where* an item was shown with *how relevant*
it is: :func:`estimate_propensity` measures the examination curve from sessions with
randomly shuffled results and :func:`click_relevance` corrects clicks by inverse propensity
weighting (IPW).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .clicks import SimulationError


def split_log(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(impressions, clicks) of a log."""
    return log[log["type"] == "impression"], log[log["type"] == "click"]


@dataclass(frozen=True)
class OnlineSummary:
    """The online metrics of one simulated log (synthetic users).

    ``ctr``: clicks / impressions; ``clicks_per_query``: clicks / sessions;
    ``sessions_with_click``: share of sessions with at least one click;
    ``time_spent_per_user_day_s``: dwell seconds after clicks per user per day, idle users
    counting as zero (``_week_s``: per 7-day week).
    """

    sessions: int
    impressions: int
    clicks: int
    ctr: float
    clicks_per_query: float
    sessions_with_click: float
    mean_dwell_per_click_s: float
    time_spent_per_user_day_s: float
    time_spent_per_user_week_s: float


def summarize(log: pd.DataFrame, n_users: int | None = None) -> OnlineSummary:
    """CTR, clicks per query, share of sessions with a click, and time spent (see :class:`OnlineSummary`).

    ``n_users`` (everyone who could have searched) defaults to the number recorded by
    :func:`simulate`; the number of days likewise.
    """
    imp, clk = split_log(log)
    users = n_users or log.attrs.get("n_users") or log["user_id"].nunique()
    n_days = log.attrs.get("n_days") or int(log["day"].max()) + 1
    sessions = log["session_id"].nunique()
    total_dwell = float(clk["dwell_seconds"].sum())
    per_user_day = total_dwell / (users * n_days)
    return OnlineSummary(
        sessions=int(sessions),
        impressions=len(imp),
        clicks=len(clk),
        ctr=len(clk) / len(imp) if len(imp) else 0.0,
        clicks_per_query=len(clk) / sessions if sessions else 0.0,
        sessions_with_click=clk["session_id"].nunique() / sessions if sessions else 0.0,
        mean_dwell_per_click_s=total_dwell / len(clk) if len(clk) else 0.0,
        time_spent_per_user_day_s=per_user_day,
        time_spent_per_user_week_s=per_user_day * 7,
    )


def daily(log: pd.DataFrame, period_days: int = 1) -> pd.DataFrame:
    """Per day (or per ``period_days`` block, e.g. 7 for weeks): sessions, CTR, time spent per user."""
    n_users = log.attrs.get("n_users") or log["user_id"].nunique()
    period = log["day"] // period_days
    imp = log[log["type"] == "impression"].groupby(period[log["type"] == "impression"]).size()
    clk = log[log["type"] == "click"].groupby(period[log["type"] == "click"])
    out = pd.DataFrame(
        {
            "sessions": log.groupby(period)["session_id"].nunique(),
            "impressions": imp,
            "clicks": clk.size(),
            "dwell_s": clk["dwell_seconds"].sum(),
        }
    ).fillna(0)
    out["ctr"] = out["clicks"] / out["impressions"]
    out["time_spent_per_user_s"] = out["dwell_s"] / n_users
    out.index.name = "day" if period_days == 1 else f"period_{period_days}d"
    return out


def ctr_by_position(log: pd.DataFrame) -> pd.DataFrame:
    """Impressions, clicks and CTR at each position."""
    imp, clk = split_log(log)
    out = pd.DataFrame(
        {"impressions": imp.groupby("position").size(), "clicks": clk.groupby("position").size()}
    ).fillna(0)
    out["ctr"] = out["clicks"] / out["impressions"]
    return out


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


def click_relevance(
    log: pd.DataFrame,
    propensity: pd.Series | None = None,
    by: str | Sequence[str] = "grade",
    include_randomized: bool = False,
) -> pd.DataFrame:
    """Click-based relevance estimate per group: naive CTR and, given propensities, the IPW one.

    naive = clicks / impressions; IPW = Σ_clicks 1 / propensity(position) / impressions, an
    unbiased estimate of the click rate the group would get **if examined at position 1**.
    """
    lg = log if include_randomized or "randomized" not in log else log[~log["randomized"]]
    imp, clk = split_log(lg)
    out = pd.DataFrame({"impressions": imp.groupby(by).size(), "clicks": clk.groupby(by).size()}).fillna(0)
    out["naive"] = out["clicks"] / out["impressions"]
    if propensity is not None:
        w = 1.0 / clk["position"].map(propensity).to_numpy()
        if np.isnan(w).any():
            raise SimulationError("propensity lacks some logged positions")
        out["ipw"] = (
            pd.Series(w, index=clk.index).groupby([clk[b] for b in ([by] if isinstance(by, str) else by)]).sum()
            / out["impressions"]
        )
        out["ipw"] = out["ipw"].fillna(0.0)
    return out
