import pytest

pytestmark = pytest.mark.notebooks

STAGES = {"validate", "embed", "search", "rerank", "total"}
# the HTTP status the API documents for each kind of bad input the notebook sends
EXPECTED_STATUS = {
    "k = 0": 400,
    "k absurd": 400,
    "unknown image": 404,
    "unknown user": 404,
    "crop outside": 400,
    "empty crop": 400,
    "zero-byte file": 400,
    "not an image": 415,
    "truncated PNG": 400,
    "decompression bomb": 413,
    "another user's private image": 404,
    "GET another user's private image": 404,
}


def test_serving_notebook(run_notebook):
    r = run_notebook("08_serving")
    assert r["profile"] == "smoke"
    assert r["n_indexed"] >= 3000
    # every stage of both query kinds was timed (speed itself is benchmarks/serve.py's job)
    for kind in ("by id p50", "by file p50"):
        assert set(r["latency_ms"][kind]) == STAGES and r["latency_ms"][kind]["total"] > 0
    # re-ranking rules
    assert r["privacy"] == {"owner_finds_private": True, "other_sees_private": False}
    assert r["flagged_returned"] is False
    assert r["duplicates"]["copies_with_rules"] == 1 and r["duplicates"]["copies_without_rules"] == 3
    assert r["dup_thresholds"]["phash_copy_caught"] > 0.95 and r["dup_thresholds"]["phash_random_false_match"] < 0.01
    # the indexing pipeline
    assert r["upload_found_rank1"] is True and r["failed_upload_changed_nothing"] is True
    # bad inputs: each answered with its own documented status, and none changed the index
    assert r["bad_input_statuses"] == EXPECTED_STATUS
    assert r["bad_inputs_changed_nothing"] is True
