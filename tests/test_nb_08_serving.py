import pytest

pytestmark = pytest.mark.notebooks


def test_serving_notebook(run_notebook):
    r = run_notebook("08_serving")
    assert r["profile"] == "smoke"
    assert r["n_indexed"] >= 3000
    # every stage was timed; the in-process totals stay interactive even on a busy machine
    for kind in ("by id p50", "by file p50"):
        stages = r["latency_ms"][kind]
        assert set(stages) == {"validate", "embed", "search", "rerank", "total"}
        assert 0 < stages["total"] < 100
    assert r["latency_ms"]["by id p50"]["embed"] < r["latency_ms"]["by file p50"]["embed"]  # stored vs computed
    assert 0 < r["http_p50_ms"] < 200
    # re-ranking rules
    assert r["privacy"] == {"owner_finds_private": True, "other_sees_private": False}
    assert r["flagged_returned"] is False
    assert r["duplicates"]["copies_with_rules"] == 1 and r["duplicates"]["copies_without_rules"] == 3
    assert r["dup_thresholds"]["phash_copy_caught"] > 0.95 and r["dup_thresholds"]["phash_random_false_match"] < 0.01
    # the indexing pipeline
    assert r["upload_found_rank1"] is True and r["failed_upload_changed_nothing"] is True
    # bad inputs: all 4xx, each with its own status
    statuses = r["bad_input_statuses"]
    assert len(statuses) == 12 and all(400 <= s < 500 for s in statuses.values())
    assert statuses["decompression bomb"] == 413 and statuses["not an image"] == 415
    assert statuses["another user's private image"] == 404 == statuses["GET another user's private image"]
