"""Shared fixtures.

``run_notebook(name)`` executes ``notebooks/<name>.ipynb`` once per test session with
papermill in the smoke profile (figures and results into a temporary folder, the
executed copy under ``reports/smoke/``) and returns the notebook's ``results.json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vs_lib import config

NOTEBOOKS = config.ROOT / "notebooks"


@pytest.fixture(scope="session")
def smoke_figures_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("figures")


@pytest.fixture(scope="session")
def run_notebook(smoke_figures_dir):
    cache: dict[str, dict] = {}

    def run(name: str) -> dict:
        if name in cache:
            return cache[name]
        import papermill as pm

        src = NOTEBOOKS / f"{name}.ipynb"
        assert src.exists(), f"missing notebook {src}"
        out_dir = config.reports_dir() / "smoke"
        out_dir.mkdir(parents=True, exist_ok=True)
        env_before = {k: os.environ.get(k) for k in ("VS_PROFILE", "VS_FIGURES_DIR")}
        os.environ["VS_PROFILE"] = "smoke"
        os.environ["VS_FIGURES_DIR"] = str(smoke_figures_dir)
        try:
            pm.execute_notebook(
                str(src),
                str(out_dir / f"{name}.ipynb"),
                parameters={"PROFILE": "smoke"},
                kernel_name="python3",
                cwd=str(NOTEBOOKS),
                progress_bar=False,
            )
        finally:
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        results = json.loads((smoke_figures_dir / name / "results.json").read_text())
        cache[name] = results
        return results

    return run
