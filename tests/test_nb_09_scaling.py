import json
import math
import re
from pathlib import Path

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
    # sign bits after a random rotation: the share of differing bits estimates θ/π (random-hyperplane
    # LSH); its per-pair error is binomial over d bits, E|error| <= sqrt(1/(4d)) (Jensen)
    fit = r["binary_angle_fit"]
    assert fit["random"]["mean_abs_error_vs_theta_over_pi"] < math.sqrt(1 / (4 * d)) + 0.01, fit
    assert set(r["binary_recall_by_rotation"]) == {"axes", "random", "itq"}
    assert all(0 <= v <= 1 for v in r["binary_recall_by_rotation"].values())
    # 1 vs 2 threads measured on one index; the plan's efficiency is the 2-thread one, capped at 1
    one, two = r["thread_scaling"]
    assert (one["threads"], two["threads"]) == (1, 2) and one["N"] == two["N"] > 0
    assert two["speedup"] == pytest.approx(two["qps"] / one["qps"])
    assert r["thread_efficiency"] == pytest.approx(min(1.0, two["qps"] / one["qps"] / 2))
    # the plan's query load recomputed from the measured growth (largest N) and the measured slope
    enc = r["capacity_plan_encoding"]
    row = next(p for p in plan if p["encoding"] == enc and p["n_images"] == 100e9)
    shards = math.ceil(100e9 * (b[enc] + 8) / (256e9 * 0.7))
    assert row["shards"] == shards
    n_max, qps_max = growth[-1]["N"], growth[-1]["qps"]
    for law, qps_core in (
        ("fitted", qps_max * (100e9 / shards / n_max) ** r["growth_slopes"]["qps"]),
        ("sqrt", qps_max * math.sqrt(n_max / (100e9 / shards))),
    ):
        for eff_name, eff in (("linear", 1.0), ("measured", r["thread_efficiency"])):
            replicas = max(2, math.ceil(50_000 / (qps_core * 32 * eff)))
            assert row[f"machines_{law}_{eff_name}"] == shards * replicas, (law, eff_name)


def test_scaling_markdown_states_no_measured_numbers():
    """Decimal numbers and percentages in the Markdown are inputs of the lesson, listed here."""
    allowed = {"0.5"}  # the exponent of the assumed √N law
    found = markdown_numbers(Path(__file__).parents[1] / "notebooks" / "09_scaling.ipynb")
    assert set(found) <= allowed, set(found) - allowed


NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?\s?%|(?<![\w.])\d+\.\d+(?![\w.])")


def markdown_numbers(path: Path) -> list[str]:
    """Decimal numbers and percentages in a notebook's Markdown cells, outside code spans."""
    cells = json.loads(path.read_text())["cells"]
    text = [re.sub(r"`[^`]*`", "", "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]
    return [m.group() for t in text for m in NUMBER.finditer(t)]
