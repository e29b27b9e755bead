"""Every notebook follows the course's opening, speaks to learners, and is covered by a smoke test."""

import json
import re

import pytest

from vs_lib import config

NOTEBOOKS = sorted((config.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).lstrip().startswith("# "), "title first"
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), "outputs stripped"
    src = "".join(cells[tagged[0]]["source"])
    assert "PROFILE" in src
    assert "sys.path" not in "".join("".join(c["source"]) for c in cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_only_public_library_names(path):
    """What a notebook calls is what a learner may call: no ``module._private`` names."""
    code = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    private = re.findall(
        r"\b(?:vs_lib|config|data|features|models|train|index|metrics|evaluate|online|serving|scale|viz)"
        r"\._[A-Za-z]\w*",
        code,
    )
    assert not private, private


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_smoke_test(path):
    test_file = config.ROOT / "tests" / f"test_nb_{path.stem}.py"
    assert test_file.exists(), f"{path.name} needs tests/{test_file.name} executing it in the smoke profile"
