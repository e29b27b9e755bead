"""Simulated users: the click model's rates, the log, the statistics, and position bias."""

import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from vs_lib import metrics, online, stats

N_IMAGES = 2000
LABELS = np.random.default_rng(42).integers(0, 10, N_IMAGES)


class RandomSystem:
    """Deterministic per query: k distinct random images (never the query)."""

    name = "random"

    def __call__(self, query_image_id, k, user_id):
        rng = np.random.default_rng(query_image_id)
        ids = rng.choice(N_IMAGES, k + 1, replace=False)
        return [int(i) for i in ids if i != query_image_id][:k]


class OracleSystem:
    """Same-class images first: a much better system than RandomSystem."""

    name = "oracle"

    def __call__(self, query_image_id, k, user_id):
        same = np.flatnonzero(LABELS[query_image_id] == LABELS)
        same = same[same != query_image_id]
        return [int(i) for i in same[:k]]


def test_click_model_shapes_and_monotonicity():
    cm = online.ClickModel(eta=1.0, floor=0.02, ceiling=0.6)
    np.testing.assert_allclose(cm.examine([1, 2, 4]), [1, 0.5, 0.25])
    a = cm.attract(np.arange(6))
    assert a[0] == pytest.approx(0.02) and a[5] == pytest.approx(0.6) and (np.diff(a) > 0).all()
    p = cm.click_probability([[5, 5, 0]])
    np.testing.assert_allclose(p, [[0.6, 0.3, 0.02 / 3]])
    assert (np.diff(cm.dwell_median(np.arange(6))) > 0).all()
    with pytest.raises(online.SimulationError):
        online.ClickModel(floor=0.7, ceiling=0.5)


def test_simulated_log_structure():
    log = online.simulate(RandomSystem(), LABELS, np.arange(1, 41), np.arange(500), k=6, n_days=3, seed=1)
    assert set(online.LOG_COLUMNS) <= set(log.columns)
    imp = log[log.type == "impression"]
    clk = log[log.type == "click"]
    assert (imp.groupby("session_id").size() == 6).all()
    assert imp.groupby("session_id")["position"].apply(lambda p: sorted(p) == list(range(1, 7))).all()
    # every click follows an impression of the same image at the same position in the same session
    keys = set(zip(imp.session_id, imp.displayed_image_id, imp.position, strict=False))
    assert all(k in keys for k in zip(clk.session_id, clk.displayed_image_id, clk.position, strict=False))
    assert clk.dwell_seconds.notna().all() and imp.dwell_seconds.isna().all()
    assert (log.source == "simulation:sim").all() and (log.synthetic == 1).all()
    assert (log.query_image_id != log.displayed_image_id).all()
    np.testing.assert_array_equal(
        imp.grade, metrics.FASHION_MNIST_GRADES[LABELS[imp.query_image_id], LABELS[imp.displayed_image_id]]
    )
    assert log.day.between(0, 2).all()
    # same seed -> same log
    again = online.simulate(RandomSystem(), LABELS, np.arange(1, 41), np.arange(500), k=6, n_days=3, seed=1)
    pd.testing.assert_frame_equal(log, again)


def test_click_rates_match_the_model():
    cm = online.ClickModel(eta=0.8)
    log = online.simulate(
        RandomSystem(), LABELS, np.arange(1, 301), np.arange(N_IMAGES), k=8, n_days=5, click_model=cm, seed=3
    )
    imp = log[log.type == "impression"]
    expected = cm.click_probability(imp.grade.to_numpy(), imp.position.to_numpy())
    observed = (log.type == "click").sum()
    sd = math.sqrt((expected * (1 - expected)).sum())
    assert abs(observed - expected.sum()) < 4 * sd
    # dwell grows with relevance
    clk = log[log.type == "click"]
    med = clk.groupby("grade").dwell_seconds.median()
    assert med.loc[5] > med.loc[0]


def _hand_log():
    """Two days, three users (one idle), three sessions of two results: counted by hand below."""
    rows = [  # session, user, day, position, type, dwell
        (1, 1, 0, 1, "impression", np.nan),
        (1, 1, 0, 2, "impression", np.nan),
        (1, 1, 0, 1, "click", 10.0),
        (2, 2, 0, 1, "impression", np.nan),
        (2, 2, 0, 2, "impression", np.nan),
        (3, 1, 1, 1, "impression", np.nan),
        (3, 1, 1, 2, "impression", np.nan),
        (3, 1, 1, 1, "click", 4.0),
        (3, 1, 1, 2, "click", 6.0),
    ]
    log = pd.DataFrame(rows, columns=["session_id", "user_id", "day", "position", "type", "dwell_seconds"])
    log.attrs.update({"n_users": 3, "n_days": 2})
    return log


def test_summaries_count_a_hand_made_log():
    s = online.summarize(_hand_log())
    assert (s.sessions, s.impressions, s.clicks) == (3, 6, 3)
    assert s.ctr == pytest.approx(3 / 6)
    assert s.clicks_per_query == pytest.approx(3 / 3)
    assert s.sessions_with_click == pytest.approx(2 / 3)  # session 2 had no click
    assert s.mean_dwell_per_click_s == pytest.approx(20 / 3)
    # 20 s of dwell over 3 users x 2 days, the idle user counted as zero; a week is 7 such days
    assert s.time_spent_per_user_day_s == pytest.approx(20 / 6)
    assert s.time_spent_per_user_week_s == pytest.approx(20 / 6 * 7)
    d = online.daily(_hand_log())
    assert list(d["clicks"]) == [1, 2] and list(d["ctr"]) == pytest.approx([1 / 4, 2 / 2])
    assert list(d["time_spent_per_user_s"]) == pytest.approx([10 / 3, 10 / 3])
    pos = online.ctr_by_position(_hand_log())
    assert list(pos["ctr"]) == pytest.approx([2 / 3, 1 / 3])


def test_summaries_of_a_simulation_follow_the_ranking():
    log = online.simulate(
        OracleSystem(), LABELS, np.arange(1, 51), np.arange(N_IMAGES), k=5, n_days=14, sessions_per_user_day=0.5, seed=0
    )
    d, w = online.daily(log), online.daily(log, 7)
    assert len(d) == 14 and len(w) == 2 and d.clicks.sum() == w.clicks.sum() == online.summarize(log).clicks
    pos = online.ctr_by_position(log)
    assert list(pos.index) == [1, 2, 3, 4, 5] and pos.ctr.iloc[0] > pos.ctr.iloc[-1]


def test_sessions_needed_textbook_value_and_power_by_simulation():
    # 10% -> 12%: the textbook sample size is 3,841-3,843 per group
    n = online.sessions_needed(0.10, 0.20, k=1)
    assert 3830 <= n <= 3850
    assert abs(online.sessions_needed(0.10, 0.20, k=10) - n / 10) <= 1
    assert online.sessions_needed(0.10, 0.20, k=1, design_effect=2.0) == pytest.approx(2 * n, abs=2)
    # independent check: with that n, the z-test rejects about 80% of the time
    rng = np.random.default_rng(0)
    a = rng.binomial(n, 0.10, 4000)
    b = rng.binomial(n, 0.12, 4000)
    rejections = np.mean([stats.two_proportion_ztest(x, n, y, n).p_value < 0.05 for x, y in zip(a, b, strict=False)])
    assert rejections == pytest.approx(0.80, abs=0.03)
    with pytest.raises(ValueError):
        online.sessions_needed(0.9, 0.5)


def test_ab_test_detects_a_better_system():
    users = pd.DataFrame({"id": np.arange(1, 401), "city": ["Berlin"] * 400})
    res = online.ab_test(
        RandomSystem(), OracleSystem(), LABELS, users, np.arange(N_IMAGES), k=5, n_days=3, seed=0, n_boot=500
    )
    t = res.test
    # the difference is the one of the two arms' logs, counted here with pandas
    ctr = res.log.groupby("variant")["type"].apply(lambda x: (x == "click").sum() / (x == "impression").sum())
    assert t.difference == pytest.approx(ctr["B"] - ctr["A"]) and t.ctr_a == pytest.approx(ctr["A"])
    assert t.difference > 0 and t.p_value < 1e-6 and t.bootstrap_ci_low > 0
    assert t.users_a == (res.variant == "A").sum() and t.users_a + t.users_b == 400
    # every user saw only their own variant
    assert (res.log.groupby("user_id").variant.nunique() == 1).all()
    assert (res.log.variant == res.log.user_id.map(res.variant)).all()
    assert res.log.lat.notna().all()


def test_propensity_and_ipw_recover_the_truth():
    cm = online.ClickModel(eta=1.0)
    log = online.simulate(
        OracleSystem(),
        LABELS,
        np.arange(1, 801),
        np.arange(N_IMAGES),
        k=6,
        n_days=5,
        click_model=cm,
        randomize=0.5,
        seed=7,
    )
    prop = online.estimate_propensity(log)
    np.testing.assert_allclose(prop.to_numpy(), cm.examine(np.arange(1, 7)), rtol=0.12)
    rel = online.click_relevance(log, prop, by="grade")
    five = rel.loc[5]
    assert five["naive"] < 0.7 * cm.attract(5)  # naive CTR badly underestimates the attraction
    assert five["ipw"] == pytest.approx(cm.attract(5), rel=0.1)
    with pytest.raises(online.SimulationError):
        online.estimate_propensity(log[~log.randomized])


def test_embedding_search_excludes_query_and_matches_brute_force():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(1000, 1300)
    search = online.EmbeddingSearch(emb, ids, gallery_ids=ids[:200])
    search.warm(ids[[0, 250]], 5)
    for row in (0, 250, 7):
        got = search(int(ids[row]), 5, 1)
        sims = emb[:200] @ emb[row]
        if row < 200:
            sims[row] = -np.inf
        assert got == list(ids[np.argsort(-sims)[:5]])
    with pytest.raises(online.SimulationError):
        search(5, 3, 1)


def test_log_interactions_writes_click_positives(tmp_path):
    from vs_lib import data

    db = tmp_path / "vs.db"
    data.build_database(db, data.GeneratorConfig(n_users=30, n_sessions=5))
    conn = data.connect(db)
    try:
        before = conn.execute("SELECT COUNT(*), MAX(session_id) FROM interactions").fetchone()
        users = data.read_table("users", conn)
        labels = data.load_fashion_mnist().labels
        log = online.simulate(RandomSystemLarge(), labels, users, np.arange(1000), k=4, n_days=2, name="t", seed=0)
        n = online.log_interactions(log, conn)
        assert n == len(log)
        after = conn.execute(
            "SELECT COUNT(*), MIN(session_id) FROM interactions WHERE source = 'simulation:t'"
        ).fetchone()
        assert after[0] == n and after[1] > before[1]
        # what train reads as click positives
        pos = pd.read_sql_query(
            "SELECT query_image_id, displayed_image_id FROM interactions "
            "WHERE type = 'click' AND source = 'simulation:t'",
            conn,
        )
        assert len(pos) == (log.type == "click").sum() > 0
        assert (
            conn.execute("SELECT COUNT(*) FROM interactions WHERE source='simulation:t' AND synthetic != 1").fetchone()[
                0
            ]
            == 0
        )
        # an unknown user breaks a foreign key: nothing is written
        bad = log.copy()
        bad["user_id"] = 10_000
        with pytest.raises(sqlite3.IntegrityError):
            online.log_interactions(bad, conn)
        assert conn.execute("SELECT COUNT(*) FROM interactions WHERE source = 'simulation:t'").fetchone()[0] == n
        with pytest.raises(online.SimulationError):
            online.log_interactions(log.assign(source="real"), conn)
        # replace=True: a re-run swaps the rows of its source instead of piling up copies
        assert online.log_interactions(log, conn, replace=True) == n
        assert conn.execute("SELECT COUNT(*) FROM interactions WHERE source = 'simulation:t'").fetchone()[0] == n
        assert conn.execute("SELECT COUNT(*) FROM interactions").fetchone()[0] == before[0] + n
    finally:
        conn.close()


class RandomSystemLarge:
    def __call__(self, query_image_id, k, user_id):
        rng = np.random.default_rng(query_image_id)
        return [int(i) for i in rng.choice(np.arange(1000, 60000), k, replace=False)]


def test_user_heterogeneity_keeps_the_mean_and_correlates_a_users_clicks():
    rng = np.random.default_rng(0)
    m = online.ClickModel(user_sigma=0.6).user_multipliers(200_000, rng)
    assert m.mean() == pytest.approx(1.0, abs=0.01) and m.std() > 0.5
    assert (online.ClickModel().user_multipliers(5, rng) == 1).all()
    users = np.arange(1, 401)
    kw = dict(k=10, n_days=10, seed=2)
    flat = online.simulate(OracleSystem(), LABELS, users, np.arange(N_IMAGES), click_model=online.ClickModel(), **kw)
    het = online.simulate(
        OracleSystem(), LABELS, users, np.arange(N_IMAGES), click_model=online.ClickModel(user_sigma=0.8), **kw
    )

    def user_ctr_spread(log):
        per = log.groupby(["user_id", "type"]).size().unstack().fillna(0)
        return (per["click"] / per["impression"]).std()

    assert user_ctr_spread(het) > 1.5 * user_ctr_spread(flat)
    assert online.summarize(het).ctr == pytest.approx(online.summarize(flat).ctr, rel=0.15)
