"""Simulated users: the click model's rates, the log, the statistics, position bias, the one
search path (the serving facade) and where the logs go."""

import contextlib
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


def test_draw_clicks_follows_the_click_probability():
    cm = online.ClickModel(eta=1.0)
    grades = np.tile([5, 5, 3, 0], (40_000, 1))
    mult = np.full((40_000, 1), 1.5)
    clicks = cm.draw_clicks(grades, mult, np.random.default_rng(0))
    expected = np.minimum(1, 1.5 * np.array([0.6, 0.3, cm.attract(3) / 3, 0.02 / 4]))
    sd = np.sqrt(expected * (1 - expected) / 40_000)
    assert np.all(np.abs(clicks.mean(0) - expected) < 4 * sd), (clicks.mean(0), expected)


# ----------------------------------------------------------------------------------------
# A/A tests: the false-positive rate of each analysis
# ----------------------------------------------------------------------------------------


def _one_system_log(user_sigma, n_users=400, seed=0):
    cm = online.ClickModel(user_sigma=user_sigma)
    log = online.simulate(
        OracleSystem(),
        LABELS,
        np.arange(1, n_users + 1),
        np.arange(N_IMAGES),
        k=10,
        n_days=6,
        click_model=cm,
        seed=seed,
    )
    return log, cm


def test_aa_tests_reject_at_the_nominal_rate_when_impressions_are_independent():
    log, cm = _one_system_log(user_sigma=0.0)
    aa = online.aa_tests(log, 250, click_model=cm, n_boot=200, seed=1)
    assert aa.n == 250 and aa.false_positive_z.n == 250
    # the rate is the share of tests called significant, counted here from the table
    assert aa.false_positive_z.successes == int((aa.tests.p_value < 0.05).sum())
    assert aa.false_positive_z.ci_low <= 0.05 <= aa.false_positive_z.ci_high, aa.false_positive_z
    # under H0 the z statistics are standard normal
    assert abs(aa.tests.z.mean()) < 0.2 and 0.8 < aa.tests.z.std() < 1.2
    # every test really is a new split with new clicks
    assert aa.tests.difference.nunique() == 250


def test_aa_tests_show_the_z_test_overconfident_when_users_differ():
    log, cm = _one_system_log(user_sigma=1.2)
    aa = online.aa_tests(log, 250, click_model=cm, n_boot=200, seed=2)
    z, boot = aa.false_positive_z, aa.false_positive_bootstrap
    assert z.ci_low > 0.05, z  # clearly more than 5 % of A/A tests "significant"
    assert boot.rate < z.rate and boot.ci_low <= 0.05 * 1.6, (boot, z)
    assert aa.tests.z.std() > 1.2  # the naive z statistic is too spread out


def test_aa_tests_refuse_nonsense():
    log, cm = _one_system_log(user_sigma=0.0, n_users=50)
    with pytest.raises(ValueError):
        online.aa_tests(log, 0, click_model=cm)
    with pytest.raises(ValueError):
        online.aa_tests(log[log.type == "click"], 5, click_model=cm)


# ----------------------------------------------------------------------------------------
# The one search path: simulated users rank through the serving facade
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """A small platform with many private and flagged images, so that the filters have work, and
    enough users that many own no private image."""
    from vs_lib import testing

    return testing.build_small_platform(
        tmp_path_factory.mktemp("sim-platform"), 1500, n_users=300, seed=3, private_rate=0.2, flagged_rate=0.05
    )


@pytest.fixture(scope="module")
def platform_embeddings(platform):
    from vs_lib import data, models

    encoder = models.load_encoder(platform["model"])
    with contextlib.closing(data.connect(platform["db"], readonly=True)) as conn:
        ids = np.array([r[0] for r in conn.execute("SELECT id FROM images ORDER BY id")], dtype=np.int64)
    pixels = data.load_fashion_mnist().images[ids]
    return encoder, encoder.embed(pixels), ids


def _images(platform):
    from vs_lib import data

    with contextlib.closing(data.connect(platform["db"], readonly=True)) as conn:
        return pd.read_sql_query("SELECT id, owner_id, is_private, is_flagged FROM images", conn).set_index("id")


def test_service_search_answers_exactly_as_the_facade(platform, platform_embeddings):
    from vs_lib import data, testing

    encoder, emb, ids = platform_embeddings
    images = _images(platform)
    public = images.index[(images.is_private == 0) & (images.is_flagged == 0)].to_numpy()
    owners = sorted(images[(images.is_private == 1) & (images.is_flagged == 0)].owner_id.unique())
    assert online.private_owners(platform["db"]) == set(map(int, owners))
    users = data.read_table("users", data.connect(platform["db"], readonly=True))
    others = sorted(set(users.id) - set(owners))
    assert others, "the platform needs users without private images"
    reference = testing.open_small_platform(platform)  # the facade as the server runs it: no caches of ours
    system = online.ServiceSearch.from_embeddings(encoder, emb, ids, db_path=platform["db"], name="pca")
    try:
        queries = np.random.default_rng(0).choice(public, 40, replace=False)
        system.warm(queries, 10)
        assert system.candidates is not None and system.candidates.hits == 0
        requesters = [None, *owners[:4], *others[:2]]
        for q in queries:
            for user in requesters:
                got = system(int(q), 10, user)
                assert got == reference.search_ids(int(q), 10, user), (q, user)
                assert system(int(q), 10, user) == got  # and again, from the result cache
        assert system.candidates.hits > 0  # the batch answers were used, not recomputed
        # users without private images share one cached answer: the service was called less often
        assert system.calls < len(queries) * len(requesters)
        # an upload changes what the index holds: the candidate cache forgets everything
        v = np.random.default_rng(1).normal(size=(1, emb.shape[1])).astype(np.float32)
        v /= np.linalg.norm(v)
        system.candidates.warm(v)
        assert system.candidates.search(v, 1)[1][0, 0] != 10**6
        system.candidates.add(v, [10**6])
        assert system.candidates.search(v, 1)[1][0, 0] == 10**6
    finally:
        system.close()
        reference.close()


def test_simulated_users_never_see_hidden_images(platform, platform_embeddings):
    from vs_lib import data
    from vs_lib.index import exact_topk

    encoder, emb, ids = platform_embeddings
    images = _images(platform)
    users = data.read_table("users", data.connect(platform["db"], readonly=True)).sample(60, random_state=0)
    pool = online.visible_queries(ids, platform["db"])
    assert len(pool) == int(((images.is_private == 0) & (images.is_flagged == 0)).sum())
    labels = data.load_fashion_mnist().labels
    with online.ServiceSearch.from_embeddings(encoder, emb, ids, db_path=platform["db"]) as system:
        log = online.simulate(system, labels, users, pool, k=10, n_days=3, sessions_per_user_day=2, seed=0)
    shown = log.join(images, on="displayed_image_id")
    hidden = (shown.is_flagged == 1) | ((shown.is_private == 1) & (shown.owner_id != shown.user_id))
    assert not hidden.any(), shown[hidden].head()
    assert (log.query_image_id != log.displayed_image_id).all()
    # the rules had work to do: plain nearest neighbours of these queries include hidden images
    q_rows = np.searchsorted(ids, log.query_image_id.unique())
    _, nearest = exact_topk(emb[q_rows], emb, 11)
    raw = images.loc[ids[nearest.ravel()]]
    assert ((raw.is_flagged == 1) | (raw.is_private == 1)).sum() > 50


# ----------------------------------------------------------------------------------------
# Where logs go: a simulated-interactions database, never the platform's
# ----------------------------------------------------------------------------------------


def _small_log(platform, name="t", seed=0):
    from vs_lib import data

    users = data.read_table("users", data.connect(platform["db"], readonly=True))
    return online.simulate(
        RandomSystemSmall(),
        data.load_fashion_mnist().labels,
        users,
        np.arange(200),
        k=4,
        n_days=2,
        name=name,
        seed=seed,
    )


class RandomSystemSmall:
    """k distinct random images of the small platform (ids 0..1499), never the query."""

    def __call__(self, query_image_id, k, user_id):
        rng = np.random.default_rng(query_image_id)
        ids = rng.choice(1500, k + 1, replace=False)
        return [int(i) for i in ids if i != query_image_id][:k]


def _platform_state(platform):
    with contextlib.closing(sqlite3.connect(platform["db"])) as conn:
        return conn.execute("SELECT COUNT(*), MAX(id), SUM(type = 'click') FROM interactions").fetchone()


def test_log_interactions_writes_a_separate_database(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("VS_DB", str(platform["db"]))
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path))
    before = _platform_state(platform)
    log = _small_log(platform)
    path = online.simulation_db_path("unit-test")
    assert path == tmp_path / "simulations" / "unit-test.db"
    n = online.log_interactions(log, path)
    assert n == len(log)
    stored = online.read_log(path)
    assert len(stored) == n and (stored.source == "simulation:t").all() and (stored.synthetic == 1).all()
    # the clicks stored are the log's clicks, and the click counts per session agree (pandas vs SQL)
    clicks = log[log.type == "click"]
    pd.testing.assert_series_equal(
        stored[stored.type == "click"].groupby("session_id").size().reset_index(drop=True),
        clicks.groupby("session_id").size().reset_index(drop=True),
    )
    # a second log appends with distinct session ids; replace=True swaps a source's rows
    assert online.log_interactions(_small_log(platform, "u", seed=1), path) > 0
    again = online.read_log(path)
    assert again.groupby("session_id").source.nunique().max() == 1
    assert online.log_interactions(log, path, replace=True) == n
    assert (online.read_log(path, ["simulation:t"]).shape[0], len(online.read_log(path))) == (n, len(again))
    # the platform database was only read
    assert _platform_state(platform) == before


def test_log_interactions_refuses_the_platform_database_and_unknown_ids(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("VS_DB", str(platform["db"]))
    before = _platform_state(platform)
    log = _small_log(platform)
    with pytest.raises(online.SimulationError, match="platform database"):
        online.log_interactions(log, platform["db"])
    copy = tmp_path / "copy.db"  # any database with the platform's tables, not only the configured one
    with contextlib.closing(sqlite3.connect(platform["db"])) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    with pytest.raises(online.SimulationError, match="platform database"):
        online.log_interactions(log, copy)
    target = tmp_path / "sim.db"
    bad = log.copy()
    bad.loc[bad.index[0], "user_id"] = 10_000
    with pytest.raises(online.SimulationError, match="nothing written"):
        online.log_interactions(bad, target)
    bad = log.copy()
    bad.loc[bad.index[-1], "displayed_image_id"] = 50_000  # not an image of this platform
    with pytest.raises(online.SimulationError, match="nothing written"):
        online.log_interactions(bad, target)
    assert not target.exists()
    with pytest.raises(online.SimulationError):
        online.log_interactions(log.assign(source="real"), target)
    assert _platform_state(platform) == before


def test_read_click_log_pairs_and_fingerprint(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("VS_DB", str(platform["db"]))
    log = _small_log(platform)
    path = tmp_path / "sim.db"
    online.log_interactions(log, path)
    clicks = online.read_click_log(path)
    expected = log.loc[log.type == "click", ["query_image_id", "displayed_image_id"]].to_numpy()
    np.testing.assert_array_equal(clicks.pairs, expected)
    assert clicks.pairs.dtype == np.int64 and len(clicks) == len(expected) > 0
    # the same clicks in another file: the same fingerprint; one more click: another one
    other = tmp_path / "other.db"
    online.log_interactions(log, other)
    assert online.read_click_log(other).fingerprint == clicks.fingerprint
    online.log_interactions(_small_log(platform, "u", seed=5), other)
    grown = online.read_click_log(other)
    assert len(grown) > len(clicks) and grown.fingerprint != clicks.fingerprint
    assert online.read_click_log(other, ["simulation:t"]).fingerprint == clicks.fingerprint
    # the platform's own seed log reads the same way (what training reads by default)
    seed_log = online.read_click_log(platform["db"])
    with contextlib.closing(sqlite3.connect(platform["db"])) as conn:
        (n_clicks,) = conn.execute("SELECT COUNT(*) FROM interactions WHERE type = 'click'").fetchone()
    assert len(seed_log) == n_clicks
    with pytest.raises(FileNotFoundError):
        online.read_click_log(tmp_path / "missing.db")


def test_simulate_command_logs_outside_the_platform_database(platform, tmp_path, monkeypatch, capsys):
    import argparse

    monkeypatch.setenv("VS_DB", str(platform["db"]))
    monkeypatch.setenv("VS_DATA_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    online.cli_add_arguments(parser)
    before = _platform_state(platform)
    args = ["--system", "baseline:pixels", "--users", "20", "--days", "2", "--queries", "100", "--name", "cli-test"]
    assert online.cli_main(parser.parse_args([*args, "--dry-run"])) == 0
    assert not (tmp_path / "simulations").exists()
    assert online.cli_main(parser.parse_args(args)) == 0
    out = capsys.readouterr().out
    path = tmp_path / "simulations" / "cli-test.db"
    stored = online.read_log(path)
    assert f"logged {len(stored):,} synthetic interactions" in out and str(path) in out
    assert stored.query_image_id.lt(60_000).all()  # training images as queries: clicks usable for training
    images = _images(platform)
    shown = stored.join(images, on="displayed_image_id")
    assert not ((shown.is_flagged == 1) | ((shown.is_private == 1) & (shown.owner_id != shown.user_id))).any()
    assert _platform_state(platform) == before
