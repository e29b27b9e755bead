"""Shared fixtures.

``run_notebook(name)`` executes ``notebooks/<name>.ipynb`` once per test session with
papermill in the smoke profile and returns the notebook's ``results.json``. The notebooks
run in a sandbox: a temporary data folder holding a copy of the platform database (so
simulated clicks and uploads never touch the user's own), figures in a temporary folder,
trained smoke models shared with the real models folder, and the executed copy under
``reports/smoke/``.
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
def notebook_env(tmp_path_factory, smoke_figures_dir) -> dict[str, str]:
    """Environment for smoke runs: sandboxed data dir with a copy of the database."""
    from vs_lib import data

    sandbox = tmp_path_factory.mktemp("nbdata")
    db = config.db_path()
    if db.exists():
        src = data.connect(db, readonly=True)
        dst = __import__("sqlite3").connect(sandbox / "visual_search.db")
        src.backup(dst)  # consistent copy even if another process writes
        src.close(), dst.close()
    else:
        data.build_database(sandbox / "visual_search.db")
    return {
        "VS_PROFILE": "smoke",
        "VS_FIGURES_DIR": str(smoke_figures_dir),
        "VS_DATA_DIR": str(sandbox),
        "VS_DB": str(sandbox / "visual_search.db"),
        "VS_MODELS_DIR": str(config.models_dir()),
    }


@pytest.fixture(scope="session")
def run_notebook(smoke_figures_dir, notebook_env):
    cache: dict[str, dict] = {}

    def run(name: str) -> dict:
        if name in cache:
            return cache[name]
        import papermill as pm

        src = NOTEBOOKS / f"{name}.ipynb"
        assert src.exists(), f"missing notebook {src}"
        out_dir = config.reports_dir() / "smoke"
        out_dir.mkdir(parents=True, exist_ok=True)
        env_before = {k: os.environ.get(k) for k in notebook_env}
        os.environ.update(notebook_env)
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
