"""Simulated users: the click model's rates, the log, the statistics, and position bias."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from vs_lib import metrics, online

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
        same = np.flatnonzero(LABELS == LABELS[query_image_id])
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
    keys = set(zip(imp.session_id, imp.displayed_image_id, imp.position))
    assert all(k in keys for k in zip(clk.session_id, clk.displayed_image_id, clk.position))
    assert clk.dwell_seconds.notna().all() and imp.dwell_seconds.isna().all()
    assert (log.source == "simulation:sim").all() and (log.synthetic == 1).all()
    assert (log.query_image_id != log.displayed_image_id).all()
    np.testing.assert_array_equal(imp.grade, metrics.FASHION_MNIST_GRADES[LABELS[imp.query_image_id],
                                                                          LABELS[imp.displayed_image_id]])
    assert log.day.between(0, 2).all()
    # same seed -> same log
    again = online.simulate(RandomSystem(), LABELS, np.arange(1, 41), np.arange(500), k=6, n_days=3, seed=1)
    pd.testing.assert_frame_equal(log, again)


def test_click_rates_match_the_model():
    cm = online.ClickModel(eta=0.8)
    log = online.simulate(RandomSystem(), LABELS, np.arange(1, 301), np.arange(N_IMAGES), k=8, n_days=5,
                          click_model=cm, seed=3)
    imp = log[log.type == "impression"]
    expected = cm.click_probability(imp.grade.to_numpy(), imp.position.to_numpy())
    observed = (log.type == "click").sum()
    sd = math.sqrt((expected * (1 - expected)).sum())
    assert abs(observed - expected.sum()) < 4 * sd
    # dwell grows with relevance
    clk = log[log.type == "click"]
    med = clk.groupby("grade").dwell_seconds.median()
    assert med.loc[5] > med.loc[0]


def test_summaries():
    log = online.simulate(OracleSystem(), LABELS, np.arange(1, 51), np.arange(N_IMAGES), k=5, n_days=14,
                          sessions_per_user_day=0.5, seed=0)
    s = online.summarize(log)
    assert s["ctr"] == pytest.approx(s["clicks"] / s["impressions"])
    assert s["clicks_per_query"] == pytest.approx(s["clicks"] / s["sessions"])
    clicks = log[log.type == "click"]
    assert s["time_spent_per_user_day_s"] == pytest.approx(clicks.dwell_seconds.sum() / (50 * 14))
    assert s["time_spent_per_user_week_s"] == pytest.approx(7 * s["time_spent_per_user_day_s"])
    d, w = online.daily(log), online.daily(log, 7)
    assert len(d) == 14 and len(w) == 2 and d.clicks.sum() == w.clicks.sum() == s["clicks"]
    pos = online.ctr_by_position(log)
    assert list(pos.index) == [1, 2, 3, 4, 5] and pos.ctr.iloc[0] > pos.ctr.iloc[-1]


def test_two_proportion_ztest_matches_chi_square():
    r = online.two_proportion_ztest(120, 1000, 150, 1000)
    chi2, p, _, _ = chi2_contingency([[120, 880], [150, 850]], correction=False)
    assert r["z"] ** 2 == pytest.approx(chi2)
    assert r["p_value"] == pytest.approx(p)
    assert r["difference"] == pytest.approx(0.03)
    assert r["ci_low"] < r["difference"] < r["ci_high"]


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
    rejections = np.mean([online.two_proportion_ztest(x, n, y, n)["p_value"] < 0.05 for x, y in zip(a, b)])
    assert rejections == pytest.approx(0.80, abs=0.03)
    with pytest.raises(ValueError):
        online.sessions_needed(0.9, 0.5)


def test_ab_test_detects_a_better_system_and_not_an_identical_one():
    users = pd.DataFrame({"id": np.arange(1, 401), "city": ["Berlin"] * 400})
    res = online.ab_test(RandomSystem(), OracleSystem(), LABELS, users, np.arange(N_IMAGES), k=5, n_days=3, seed=0,
                         n_boot=500)
    t = res.test
    assert t["difference"] > 0 and t["p_value"] < 1e-6
    assert t["bootstrap_ci_low"] > 0 and t["bootstrap_ci_low"] < t["difference"] < t["bootstrap_ci_high"]
    assert t["users_a"] + t["users_b"] == 400
    # every user saw only their own variant
    assert (res.log.groupby("user_id").variant.nunique() == 1).all()
    assert (res.log.variant.map({"A": 0, "B": 1}) == res.log.user_id.map(res.variant).map({"A": 0, "B": 1})).all()
    assert res.log.lat.notna().all()
    aa = online.ab_test(OracleSystem(), OracleSystem(), LABELS, users, np.arange(N_IMAGES), k=5, n_days=3, seed=1,
                        n_boot=500)
    assert aa.test["bootstrap_ci_low"] < 0 < aa.test["bootstrap_ci_high"] or aa.test["p_value"] > 0.001


def test_propensity_and_ipw_recover_the_truth():
    cm = online.ClickModel(eta=1.0)
    log = online.simulate(OracleSystem(), LABELS, np.arange(1, 801), np.arange(N_IMAGES), k=6, n_days=5,
                          click_model=cm, randomize=0.5, seed=7)
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
        after = conn.execute("SELECT COUNT(*), MIN(session_id) FROM interactions WHERE source = 'simulation:t'").fetchone()
        assert after[0] == n and after[1] > before[1]
        # what train reads as click positives
        pos = pd.read_sql_query("SELECT query_image_id, displayed_image_id FROM interactions "
                                "WHERE type = 'click' AND source = 'simulation:t'", conn)
        assert len(pos) == (log.type == "click").sum() > 0
        assert conn.execute("SELECT COUNT(*) FROM interactions WHERE source='simulation:t' AND synthetic != 1").fetchone()[0] == 0
        # an unknown user breaks a foreign key: nothing is written
        bad = log.copy()
        bad["user_id"] = 10_000
        with pytest.raises(Exception):
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
    het = online.simulate(OracleSystem(), LABELS, users, np.arange(N_IMAGES), click_model=online.ClickModel(user_sigma=0.8), **kw)
    def user_ctr_spread(log):
        per = log.groupby(["user_id", "type"]).size().unstack().fillna(0)
        return (per["click"] / per["impression"]).std()
    assert user_ctr_spread(het) > 1.5 * user_ctr_spread(flat)
    assert online.summarize(het)["ctr"] == pytest.approx(online.summarize(flat)["ctr"], rel=0.15)
