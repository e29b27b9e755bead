"""Shared fixtures.

Everything a test session writes goes under pytest's temporary folders:

- ``smoke_models_dir``: the session's models folder.  :func:`smoke_model` trains a smoke
  model there through the library (``train.ensure_model(..., "smoke")``) the first time a
  test asks for it — seconds for the small CNNs — and the notebooks reuse the same files;
- ``run_notebook(name)`` executes ``notebooks/<name>.ipynb`` once per test session with
  papermill in the smoke profile and returns the notebook's ``results.json``; its exercises
  run in solve mode (``VS_SOLVE=1``), so every worked solution is checked against the run.  The
  notebooks run in a sandbox: a temporary data folder holding a copy of the platform
  database (so simulated clicks and uploads never touch the user's own), the session's
  models folder, figures and the executed copies in temporary folders.

Session fixtures are shared by many tests: treat what they return as read-only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vs_lib import config

NOTEBOOKS = config.ROOT / "notebooks"

#: background processes started when the session begins, by name (see ``pytest_collection_finish``)
_WARM_UPS: dict[str, subprocess.Popen] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """UMAP compiles its numba functions the first time it is imported and caches them
    (``NUMBA_CACHE_DIR``): on a cold cache that is half a minute of one core.  When notebook 05
    is among the tests, the import runs in the background while the first tests run, and the
    notebook waits for it (``umap_compiled``) instead of compiling in its own kernel."""
    if any("test_nb_05_" in item.nodeid for item in session.items):
        _WARM_UPS["umap"] = subprocess.Popen(
            [sys.executable, "-c", "import umap"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    for proc in _WARM_UPS.values():
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def umap_compiled() -> None:
    """Wait for the background UMAP import (if one was started) to have filled numba's cache."""
    proc = _WARM_UPS.get("umap")
    if proc is not None:
        proc.wait(timeout=600)


@pytest.fixture(scope="session")
def smoke_figures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("figures")


@pytest.fixture(scope="session")
def smoke_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's models folder (smoke models land in its ``smoke/`` subfolder)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smoke_model(smoke_models_dir: Path) -> Callable[[str], Path]:
    """``smoke_model(positives)``: the path of a smoke model, trained once per session."""
    from vs_lib import models, train

    def get(positives: str) -> Path:
        # the test process is ours: all cores on a quiet machine, one on a busy one
        with models.torch_threads(models.auto_threads()):
            return train.ensure_model(positives, "smoke", models_dir=smoke_models_dir, progress=False)

    return get


@pytest.fixture(scope="session")
def notebook_env(
    tmp_path_factory: pytest.TempPathFactory, smoke_figures_dir: Path, smoke_models_dir: Path
) -> dict[str, str]:
    """Environment for smoke runs: sandboxed data dir with a copy of the database."""
    from vs_lib import data

    sandbox = tmp_path_factory.mktemp("nbdata")
    db = config.db_path()
    if db.exists():
        src = data.connect(db, readonly=True)
        dst = sqlite3.connect(sandbox / "visual_search.db")
        src.backup(dst)  # consistent copy even if another process writes
        src.close(), dst.close()
    else:
        data.build_database(sandbox / "visual_search.db")
    return {
        "VS_PROFILE": "smoke",
        "VS_FIGURES_DIR": str(smoke_figures_dir),
        "VS_DATA_DIR": str(sandbox),
        "VS_DB": str(sandbox / "visual_search.db"),
        "VS_MODELS_DIR": str(smoke_models_dir),
        "VS_REPORTS_DIR": str(tmp_path_factory.mktemp("reports")),
        # exercises run their worked solutions and check them against the notebook's values
        "VS_SOLVE": "1",
    }


@pytest.fixture(scope="session")
def run_notebook(smoke_figures_dir: Path, notebook_env: dict[str, str]) -> Callable[[str], dict]:
    cache: dict[str, dict] = {}

    def run(name: str) -> dict:
        if name in cache:
            return cache[name]
        import papermill as pm

        src = NOTEBOOKS / f"{name}.ipynb"
        assert src.exists(), f"missing notebook {src}"
        out_dir = Path(notebook_env["VS_REPORTS_DIR"]) / "smoke"
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
                # the executed copy is written once at the end, and the finished kernel is
                # killed rather than left to unload torch: seconds per notebook (the notebooks
                # stop their servers and Ray jobs in their own cells)
                request_save_on_cell_execute=False,
                shutdown_kernel="immediate",
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


# ---------------------------------------------------------------- index interface tests
@pytest.fixture(scope="module")
def one_faiss_thread() -> Iterator[None]:
    """Small arrays: one OpenMP thread avoids spin-waiting on a shared machine."""
    from vs_lib import index as vi

    with vi.faiss_threads(1):
        yield


@pytest.fixture(scope="session")
def clustered():
    """Clustered unit vectors with queries and exact truth (``tests/_index_cases.py``)."""
    from _index_cases import make_clustered

    return make_clustered()


@pytest.fixture(scope="session")
def built(clustered):
    """One index of every case in ``tests/_index_cases.py``, built once: read-only (restore any knob you turn)."""
    from _index_cases import build_cases

    from vs_lib import index as vi

    with vi.faiss_threads(1):
        return build_cases(clustered)
