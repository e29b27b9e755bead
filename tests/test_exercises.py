"""The exercise checker: comparisons, the learner mode and the solve mode."""

from __future__ import annotations

import numpy as np
import pytest

from vs_lib import exercises


@pytest.mark.parametrize(
    ("answer", "expected", "ok"),
    [
        (0.5, 0.5 + 1e-9, True),
        (0.5, 0.51, False),
        (3, 3.0, True),
        (True, 1, False),  # a bool is not a count
        ("shirt", "shirt", True),
        ("Shirt", "shirt", False),
        (np.arange(3), [0, 1, 2], True),
        (np.arange(4), [0, 1, 2], False),  # shape
        ({"a": 1.0, "b": [1, 2]}, {"a": 1.0, "b": [1, 2]}, True),
        ({"a": 1.0}, {"a": 1.0, "b": 2}, False),  # keys
        ({"a": 1.1}, {"a": 1.0}, False),
        (float("nan"), float("nan"), True),
        (None, 0.0, False),
    ],
)
def test_compare(answer, expected, ok):
    assert exercises.compare(answer, expected).ok is ok


@pytest.fixture
def solutions(tmp_path, monkeypatch):
    (tmp_path / "t.py").write_text(
        "def exercise_1(x):\n    return sum(x) / len(x)\n\ndef exercise_2(x):\n    return max(x)\n"
    )
    monkeypatch.setattr(exercises, "solutions_dir", lambda: tmp_path)
    return tmp_path


def test_learner_mode_never_raises(solutions, monkeypatch, capsys):
    monkeypatch.delenv("VS_SOLVE", raising=False)
    assert exercises.check("t", 1, None, expected=2.0) is False
    assert exercises.check("t", 1, 1.5, expected=2.0) is False
    assert exercises.check("t", 1, 2.0, expected=2.0) is True
    out = capsys.readouterr().out
    assert "not answered yet" in out and "not yet" in out and "correct" in out


def test_solve_mode_runs_the_worked_solution(solutions, monkeypatch):
    monkeypatch.setenv("VS_SOLVE", "1")
    x = [1.0, 2.0, 6.0]
    assert exercises.check("t", 1, None, expected=np.mean(x), inputs={"x": x})
    with pytest.raises(exercises.ExerciseError, match="exercise 2"):
        exercises.check("t", 2, None, expected=np.mean(x), inputs={"x": x})  # max is not the mean
    with pytest.raises(AttributeError, match="exercise_3"):
        exercises.check("t", 3, None, expected=1, inputs={"x": x})
    with pytest.raises(FileNotFoundError):
        exercises.check("missing", 1, None, expected=1)
