import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.ray]


def test_scaling_notebook(run_notebook):
    r = run_notebook("09_scaling")
    assert r["ray_equals_inprocess"] and r["ray_max_abs_diff"] < 1e-5
    assert r["ray"]["n"] >= 1000 and r["ray"]["num_actors"] == 2  # one actor per CPU of the local 2-CPU Ray
    d = r["dim"]
    b = r["bytes_per_vector"]
    assert b["float32"] == pytest.approx(4 * d) and b["float16"] == pytest.approx(2 * d)
    assert b["SQ8"] == pytest.approx(d) and b["binary"] == pytest.approx(d / 8)
    assert b["PQ16"] == pytest.approx(16)
    # float32 codes are the vectors: FAISS's scan agrees with exact_topk up to near-ties at the 10th place
    assert r["recall_by_encoding"]["float32"] >= 0.995 and r["recall_by_encoding"]["float16"] > 0.95
    assert 0.05 < r["binary"]["binary-flat"]["recall"] < 1.0
    assert r["binary"]["binary-flat+rerank10"]["recall"] > r["binary"]["binary-flat"]["recall"]
    growth = r["growth"]
    assert [g["N"] for g in growth] == sorted(g["N"] for g in growth) and len(growth) >= 3
    assert growth[-1]["bytes"] > growth[0]["bytes"]
    assert 0.7 < r["growth_slopes"]["bytes"] < 1.1  # memory grows linearly
    assert r["milvus"]["recall"] > 0.99 and r["faiss_flat"]["recall"] > 0.99 and r["milvus"]["new_upload_found"]
    plan = r["capacity_plan"]
    assert {p["encoding"] for p in plan} >= {"float32", "PQ16", "binary"} and len({p["n_images"] for p in plan}) == 2
    f32 = next(p for p in plan if p["encoding"] == "float32" and p["n_images"] == 100e9)
    assert f32["total_tb"] == pytest.approx(100e9 * (4 * d + 8) / 1e12, rel=1e-6)
