"""The report command: each notebook executed to .ipynb and HTML, a failure reported without
stopping the others, a summary of times, and the walk-through copied as the one-page summary."""

from __future__ import annotations

import argparse
import json

import nbformat

from vs_lib import report


def _notebook(path, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "full"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(source)]  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_report_runs_every_notebook_and_writes_the_summary(tmp_path, monkeypatch, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "01_fails.ipynb", "raise ValueError('broken on purpose')")
    _notebook(src / f"{report.SUMMARY_NOTEBOOK}.ipynb", "print('walk-through ran in', PROFILE)")
    monkeypatch.setattr(report, "notebooks", lambda only=None: sorted(src.glob("*.ipynb")))
    out = tmp_path / "reports"
    code = report.cli_main(argparse.Namespace(profile="smoke", only=None, out=out))
    assert code == 1  # one notebook failed ...
    summary = json.loads((out / "summary.json").read_text())
    status = {r["notebook"]: r["ok"] for r in summary["notebooks"]}
    assert status == {"01_fails": False, report.SUMMARY_NOTEBOOK: True}  # ... and the next one still ran
    assert "broken on purpose" in (out / "01_fails.ipynb").read_text()  # the executed copy shows the error
    page = (out / "summary.html").read_text()
    assert page == (out / f"{report.SUMMARY_NOTEBOOK}.html").read_text() and "walk-through ran in smoke" in page
    assert not list(out.glob(".*partial*"))  # no half-written copy left behind
