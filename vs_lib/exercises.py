"""Exercises at the end of every notebook, checked against values the notebook computed.

A notebook's exercise is three cells: the question (Markdown), an answer cell the learner
fills in (``answer_1 = None  # your code``), and a checking cell::

    exercises.check(TOPIC, 1, answer_1, expected=p_at_5, inputs={"embeddings": E, "labels": y})

``expected`` is a value the notebook itself measured earlier (never a constant typed in), so
the check stays right whatever the run produced.  Worked solutions live out of the way, in
``notebooks/solutions/<TOPIC>.py``, as functions ``exercise_<n>(**inputs)``.

Two modes:

- *learner* (default): an answer of ``None`` prints "not answered yet"; a wrong answer prints
  what is wrong (type, shape, or "not equal") and returns ``False`` without raising, so
  *Run all* still reaches the end; a right one prints a tick.
- *solve* (``VS_SOLVE=1`` in the environment, as the tests set it): the learner's answer is
  ignored, the worked solution is run on ``inputs`` and must match ``expected``, otherwise
  :class:`ExerciseError` is raised.  This is how the test suite proves every solution right.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import config

__all__ = ["ExerciseError", "Verdict", "check", "compare", "solution", "solutions_dir", "solve_mode"]


class ExerciseError(AssertionError):
    """A worked solution disagrees with the value the notebook computed."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one comparison: ``ok`` and, when not, a short reason."""

    ok: bool
    reason: str = ""


def solutions_dir() -> Path:
    """Folder of the worked solutions: ``notebooks/solutions/``."""
    return config.ROOT / "notebooks" / "solutions"


def solve_mode() -> bool:
    """True when ``VS_SOLVE=1``: checks run the worked solutions instead of the learner's answers."""
    return os.environ.get("VS_SOLVE", "") == "1"


def _load(topic: str) -> ModuleType:
    path = solutions_dir() / f"{topic}.py"
    if not path.exists():
        raise FileNotFoundError(f"no worked solutions for {topic!r}: expected {path}")
    spec = importlib.util.spec_from_file_location(f"vs_solutions_{topic}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solution(topic: str, number: int) -> Callable[..., Any]:
    """The worked solution ``exercise_<number>`` of notebook ``topic``."""
    fn = getattr(_load(topic), f"exercise_{int(number)}", None)
    if not callable(fn):
        raise AttributeError(f"{solutions_dir() / (topic + '.py')} defines no exercise_{number}()")
    return fn


def compare(answer: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 1e-9) -> Verdict:
    """Whether ``answer`` equals ``expected``: numbers and arrays within ``rtol``/``atol``,
    mappings key by key, sequences element by element, anything else by ``==``."""
    if isinstance(expected, Mapping):
        if not isinstance(answer, Mapping):
            return Verdict(False, f"expected a mapping, got {type(answer).__name__}")
        if set(answer) != set(expected):
            return Verdict(False, f"expected the keys {sorted(map(str, expected))}, got {sorted(map(str, answer))}")
        for key in expected:
            v = compare(answer[key], expected[key], rtol=rtol, atol=atol)
            if not v.ok:
                return Verdict(False, f"[{key!r}]: {v.reason}")
        return Verdict(True)
    if isinstance(expected, (bool, str)) or expected is None:
        return Verdict(answer == expected and type(answer) is type(expected), "not equal")
    if isinstance(expected, (int, float, np.integer, np.floating)):
        if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
            return Verdict(False, f"expected a number, got {type(answer).__name__}")
        a, e = float(answer), float(expected)
        if math.isnan(e):
            return Verdict(math.isnan(a), "expected NaN")
        return Verdict(math.isclose(a, e, rel_tol=rtol, abs_tol=atol), "not equal")
    if isinstance(expected, (np.ndarray, list, tuple)):
        try:
            a_arr, e_arr = np.asarray(answer), np.asarray(expected)
        except (TypeError, ValueError):
            return Verdict(False, f"expected an array, got {type(answer).__name__}")
        if a_arr.shape != e_arr.shape:
            return Verdict(False, f"expected shape {e_arr.shape}, got {a_arr.shape}")
        if e_arr.dtype.kind in "biuf" and a_arr.dtype.kind in "biuf":
            return Verdict(bool(np.allclose(a_arr, e_arr, rtol=rtol, atol=atol, equal_nan=True)), "not equal")
        return Verdict(bool(np.array_equal(a_arr, e_arr)), "not equal")
    return Verdict(bool(answer == expected), "not equal")


def _say(text: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # plain Python without IPython
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


def check(
    topic: str,
    number: int,
    answer: Any,
    *,
    expected: Any,
    inputs: Mapping[str, Any] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> bool:
    """Check exercise ``number`` of notebook ``topic`` (see the module doc for the two modes).

    Returns whether the answer (or, in solve mode, the worked solution) matches ``expected``.
    """
    if solve_mode():
        got = solution(topic, number)(**dict(inputs or {}))
        verdict = compare(got, expected, rtol=rtol, atol=atol)
        if not verdict.ok:
            raise ExerciseError(f"{topic} exercise {number}: the worked solution is wrong ({verdict.reason})")
        _say(f"✅ Exercise {number}: the worked solution agrees with this run.")
        return True
    if answer is None:
        _say(f"⏳ Exercise {number}: not answered yet (replace `None` with your answer and run the cell again).")
        return False
    verdict = compare(answer, expected, rtol=rtol, atol=atol)
    if verdict.ok:
        _say(f"✅ Exercise {number}: correct.")
    else:
        _say(f"❌ Exercise {number}: not yet ({verdict.reason}). Worked solution: `notebooks/solutions/{topic}.py`.")
    return verdict.ok
