"""Self-checking exercises (mmkd_helpers.exercises): the check protocol, and its use in every notebook.

Each notebook's own checkers are tested on right and wrong answers in tests/test_exercises_NN.py.
"""

import json
import re
from pathlib import Path

import pytest

from mmkd_helpers import exercises
from mmkd_helpers.exercises import CHECKERS, check, checker, digest, is_close, is_option, keys_of_notebook
from mmkd_helpers.teaching import CHECK_CALL, is_solution

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NUMBERED = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
STATEMENT = re.compile(r"^\s*\*\*(\d+)\.\*\*")


@pytest.fixture
def toy():
    """Two throw-away checkers under notebook number 99, removed afterwards."""
    @checker("99.1", hint="add the two numbers")
    def _(answer, a, b):
        return is_close(answer, a + b, abs_=1e-9)

    right = digest("99.2", "b")

    @checker("99.2", hint="which one is the validation split?")
    def _(answer):
        return is_option("99.2", answer, right)

    yield
    for key in ("99.1", "99.2"):
        CHECKERS.pop(key)


def test_check_says_correct_not_yet_or_no_answer_and_never_prints_the_answer(toy, capsys):
    assert check("99.1", 5, a=2, b=3) is True
    assert capsys.readouterr().out == "Exercise 99.1: correct.\n"
    assert check("99.1", 7, a=2, b=3) is False
    out = capsys.readouterr().out
    assert out.startswith("Exercise 99.1: not yet.") and "too high" in out and "5" not in out
    assert check("99.1", 4, a=2, b=3) is False and "too low" in capsys.readouterr().out
    assert check("99.1", None, a=2, b=3) is False and "no answer yet" in capsys.readouterr().out
    assert check("99.1", "five", a=2, b=3) is False
    assert "could not be checked" in (out := capsys.readouterr().out) and "add the two numbers" in out


def test_multiple_choice_is_compared_through_a_digest_case_and_space_insensitively(toy, capsys):
    assert check("99.2", " B ") and not check("99.2", "a") and not check("99.2", "c")
    assert digest("99.2", "b") != digest("99.3", "b"), "the digest must depend on the exercise"


def test_unknown_or_malformed_keys_are_refused_by_name():
    with pytest.raises(ValueError, match="no checker for exercise 98.7"):
        check("98.7", 1)
    with pytest.raises(ValueError, match="not of the form 'NN.k'"):
        check("3.1", 1)
    with pytest.raises(ValueError, match="not of the form"):
        checker("x", hint="")


def test_a_key_cannot_have_two_checkers(toy):
    with pytest.raises(ValueError, match="two checkers"):
        checker("99.1", hint="")(lambda answer: True)


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell):
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NUMBERED, ids=[p.stem for p in NUMBERED])
def test_every_exercise_has_a_self_checking_cell_for_the_learner(path):
    """Each exercise statement (**k.**) of notebook NN has a cell tagged ``exercise`` calling check("NN.k", ...),
    every checker of NN is used, and the instructor's copy shows each check passing on the worked solution."""
    number = path.name[:2]
    cells = _cells(path)
    statements = {int(m.group(1)) for c in cells if c["cell_type"] == "markdown" for m in [STATEMENT.match(_text(c))]
                  if m}
    assert statements, f"{path.name}: no exercise statements (markdown cells opening with **k.**)"
    learner = {(m.group(1), int(m.group(2))) for c in cells if "exercise" in c["metadata"].get("tags", [])
               for m in CHECK_CALL.finditer(_text(c))}
    assert {n for _, n in learner} >= statements, (
        f"{path.name}: exercises {sorted(statements - {n for _, n in learner})} have no exercise cell calling check")
    assert {nb for nb, _ in learner} == {number}, f"{path.name}: checks keys of another notebook {learner}"
    keys = keys_of_notebook(number)
    assert keys == [f"{number}.{n}" for n in sorted(statements)], (
        f"{path.name}: checkers {keys} but statements {sorted(statements)}")
    outputs = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for c in cells if c["cell_type"] == "code" and is_solution(c) for o in c.get("outputs", []))
    for key in keys:
        assert f"Exercise {key}: correct." in outputs, f"{path.name}: the worked solution of {key} does not pass its check"


def test_the_checker_modules_are_named_after_their_notebooks():
    names = {p.name[:2]: p.stem for p in NUMBERED}
    for module in exercises.pkgutil.iter_modules(exercises.__path__):
        match = re.match(r"^n(\d{2})_", module.name)
        assert match and match.group(1) in names, f"mmkd_helpers/exercises/{module.name}.py matches no notebook"
