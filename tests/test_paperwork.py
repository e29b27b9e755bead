"""The course speaks to its learners: nothing in it talks about the project's own paperwork."""

from __future__ import annotations

import re
from pathlib import Path

from vs_lib import config

PAPERWORK = re.compile(
    r"SPEC\.md|STYLE\.md|\bthe issue\b|\bissue's\b|\bclosing note|\bissue #?\d+",
    re.I,
)


def _texts() -> list[Path]:
    root = config.ROOT
    files = [*root.glob("vs_lib/**/*.py"), *root.glob("tests/**/*.py"), *root.glob("benchmarks/**/*.py")]
    files += [*root.glob("notebooks/**/*.ipynb"), *root.glob("notebooks/**/*.py"), *root.glob("*.md")]
    files += [root / "data" / "README.md", root / "Makefile"]
    return [f for f in files if f.exists() and f.resolve() != Path(__file__).resolve()]


def test_nothing_talks_about_the_projects_paperwork():
    offenders = []
    for f in _texts():
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if PAPERWORK.search(line):
                offenders.append(f"{f.relative_to(config.ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "the course speaks to learners, not about its paperwork:\n" + "\n".join(offenders)
