import pytest

pytestmark = pytest.mark.notebooks

STAGES = {"validate", "embed", "search", "rerank", "total"}
# the HTTP status the API documents for each kind of bad input the notebook sends
EXPECTED_STATUS = {
    "k = 0": 400,
    "k absurd": 400,
    "unknown image": 404,
    "claimed identity (user_id field)": 400,
    "crop outside": 400,
    "empty crop": 400,
    "zero-byte file": 400,
    "not an image": 415,
    "truncated PNG": 400,
    "decompression bomb": 413,
    "another user's private image": 404,
    "malformed token": 401,
    "expired token": 401,
    "revoked token": 401,
    "GET another user's private image": 404,
    "upload without a credential": 401,
    "upload claiming an owner": 400,
    "delete another user's image": 404,
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
    # over HTTP, the private image exists only for its owner's credential
    assert r["visibility"] == {
        "anonymous": {"in_results": False, "get": 404, "thumbnail": 404},
        "owner": {"in_results": True, "get": 200, "thumbnail": 200},
        "other": {"in_results": False, "get": 404, "thumbnail": 404},
    }
    # uploads streamed beside the searches and all succeeded (how fast is benchmarks/serve.py's job)
    u = r["uploads_beside_searches"]
    assert u["uploads"] >= 5 and u["failed_uploads"] == 0 and u["search_p99_with_ms"] > 0
    # an upload acknowledged just before a SIGKILL is searchable, its owner's, and still private
    assert r["kill_drill"] == {"rank1_after_restart": True, "owner_get": 200, "anonymous_get": 404}
