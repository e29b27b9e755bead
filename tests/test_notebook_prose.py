"""The notebooks' prose states no measured figure.

A number about a result must come from the run (a code cell renders the Markdown from the
values) or be checked by an assertion right after the claim; a Markdown cell may state inputs
and definitions.  So a decimal number or a percentage in a Markdown cell fails this test
unless the notebook's list below names it as an input or a definition, with the reason.
Numbers inside LaTeX (``$...$``) and code spans are definitions and code, not figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vs_lib import config

NOTEBOOKS = sorted((config.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# decimals (0.93, 4.5) and percentages (30 %, 95%), outside LaTeX and code spans
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])|(?<![\w.])\d+(?:\.\d+)?\s?%")
LATEX = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
CODE = re.compile(r"`[^`\n]*`")

# inputs and definitions a Markdown cell may state, per notebook: {value: why it is typed}
ALLOWED: dict[str, dict[str, str]] = {
    "06_offline_evaluation": {"95%": "the chosen confidence level of the intervals"},
    "08_serving": {"0.2": "the polling interval of the test helper (an input)"},
    "09_scaling": {"0.5": "the exponent of the assumed √N law (a definition)"},
}


def markdown_numbers(nb_path: Path) -> list[str]:
    """Decimals and percentages in the Markdown cells of a notebook, spaces removed."""
    nb = json.loads(nb_path.read_text())
    found: list[str] = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = CODE.sub("", LATEX.sub("", "".join(cell["source"])))
        found += [m.group(0).replace(" ", "") for m in NUMBER.finditer(text)]
    return found


def test_the_scanner_finds_typed_figures_and_ignores_code_and_latex(tmp_path):
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["P@1 reaches 0.93 and 41 % of the queries, ", "`x = 0.5` $p = 0.05$"]},
            {"cell_type": "code", "source": ["y = 0.25  # 30 %"]},
        ]
    }
    path = tmp_path / "99_example.ipynb"
    path.write_text(json.dumps(nb))
    assert markdown_numbers(path) == ["0.93", "41%"]


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_states_no_measured_figure(nb_path):
    allowed = set(ALLOWED.get(nb_path.stem, {}))
    typed = [n for n in markdown_numbers(nb_path) if n not in allowed]
    assert not typed, (
        f"{nb_path.name}: figures typed into Markdown {typed}; render them from the run, "
        "check them with an assertion, or (inputs and definitions only) list them in ALLOWED"
    )
