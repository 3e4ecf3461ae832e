"""Self-checking exercises: ``check("03.1", answer, ...)`` says right or wrong, with a hint, and never the answer.

In the spirit of nbgrader's autograded cells. Every exercise of a notebook has a code cell tagged ``exercise``
(kept in the student copies) that holds the learner's answer, ``None`` until they write one, and a call of
:func:`check` with the exercise's key (``"NN.k"``: notebook NN, exercise k) and whatever notebook state the
checker needs to work the expected answer out for itself (a Dice table, a model, a seed). The checker computes
the expected value inside the package, compares, and prints one line:

* ``Exercise 03.1: correct.`` (and :func:`check` returns True);
* ``Exercise 03.1: not yet. Hint: ...`` (False); the hint may say which way the answer is off, never what it is;
* ``Exercise 03.1: no answer yet; replace the None above with yours.`` (False): a student copy runs top to
  bottom with every exercise unsolved.

The checkers of notebook NN live in the module ``mmkd_helpers.exercises.nNN_<topic>``, imported when one of its
keys is first checked. Multiple-choice answers are compared through a SHA-256 digest (:func:`digest`), so the
checker's source does not give the right option away at a glance; numbers are compared with a tolerance.

Writing a checker::

    @checker("03.1", hint="elect on the validation table, the best modality per region")
    def _(answer, dice):
        return answer == expected_from(dice)       # True/False, or (False, "a more specific hint")
"""

import hashlib
import importlib
import math
import pkgutil
import re
from dataclasses import dataclass

KEY = re.compile(r"^(\d{2})\.(\d+)$")


@dataclass(frozen=True)
class Checker:
    key: str
    test: object  # (answer, **context) -> bool | (bool, hint)
    hint: str


CHECKERS: dict = {}
"""Key ("NN.k") -> :class:`Checker`, filled as the notebooks' modules are imported."""


def checker(key: str, hint: str):
    """Decorator registering ``test(answer, **context)`` as the checker of exercise ``key`` ("NN.k")."""
    if not KEY.match(key):
        raise ValueError(f"exercise key {key!r} is not of the form 'NN.k' (notebook number, exercise number)")

    def register(test):
        if key in CHECKERS:
            raise ValueError(f"exercise {key} has two checkers")
        CHECKERS[key] = Checker(key, test, hint)
        return test

    return register


def _load(key: str) -> Checker:
    match = KEY.match(str(key))
    if not match:
        raise ValueError(f"exercise key {key!r} is not of the form 'NN.k' (notebook number, exercise number)")
    if key not in CHECKERS:
        prefix = f"n{match.group(1)}_"
        for module in pkgutil.iter_modules(__path__):
            if module.name.startswith(prefix):
                importlib.import_module(f"{__name__}.{module.name}")
    if key not in CHECKERS:
        raise ValueError(f"no checker for exercise {key}; known: {', '.join(sorted(CHECKERS)) or 'none'}")
    return CHECKERS[key]


def check(key: str, answer, **context) -> bool:
    """Check the learner's ``answer`` to exercise ``key`` and print one line: correct, not yet (with a hint), or
    no answer yet (``answer is None``). ``context``: notebook state the checker needs. Returns whether correct."""
    exercise = _load(key)
    if answer is None or answer is Ellipsis:
        print(f"Exercise {key}: no answer yet; replace the None above with yours.")
        return False
    try:
        outcome = exercise.test(answer, **context)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        print(f"Exercise {key}: not yet. The answer could not be checked ({type(error).__name__}: {error}). "
              f"Hint: {exercise.hint}")
        return False
    correct, hint = outcome if isinstance(outcome, tuple) else (bool(outcome), None)
    print(f"Exercise {key}: correct." if correct else f"Exercise {key}: not yet. Hint: {hint or exercise.hint}")
    return bool(correct)


# --- building blocks for checkers -------------------------------------------------------------------------------

def digest(key: str, option) -> str:
    """SHA-256 (hex) of a multiple-choice option for exercise ``key``: the form in which a checker stores the right
    option. Options are compared case- and space-insensitively (``" B "`` is ``"b"``)."""
    return hashlib.sha256(f"{key}:{str(option).strip().lower()}".encode()).hexdigest()


def is_option(key: str, answer, right_digest: str) -> bool:
    """Whether ``answer`` is the option whose :func:`digest` is ``right_digest``."""
    return digest(key, answer) == right_digest


def is_close(answer, expected: float, rel: float = 0.0, abs_: float = 0.0):
    """``(True, None)`` when ``answer`` is within the tolerance of ``expected``, else ``(False, hint)`` saying
    whether it is too high or too low (never by how much)."""
    value = float(answer)
    if math.isclose(value, expected, rel_tol=rel, abs_tol=abs_):
        return True, None
    if math.isnan(value):
        return False, "the answer is NaN"
    return False, "your number is too " + ("high" if value > expected else "low") + "; look at the hint again"


def keys_of_notebook(number: str) -> list:
    """Every exercise key of notebook ``number`` ("03"), its module imported."""
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith(f"n{number}_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return sorted((k for k in CHECKERS if k.startswith(f"{number}.")), key=lambda k: int(k.split(".")[1]))
