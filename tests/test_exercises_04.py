"""The checkers of notebook 04 (mmkd_helpers.exercises.n04_kd) on right and wrong answers, with small inputs whose
answers are worked out by hand here."""

import pandas as pd
import pytest
import torch

from mmkd_helpers.exercises import check


def _said(capsys):
    return capsys.readouterr().out


def test_04_1_the_et_difference_without_t1ce(capsys):
    columns = pd.MultiIndex.from_tuples([("ET", "baseline"), ("ET", "LCKD-m"), ("TC", "baseline"), ("TC", "LCKD-m")])
    table = pd.DataFrame([[40.0, 42.0, 50.0, 0.0],   # FLAIR: +2, no T1ce
                          [60.0, 59.0, 50.0, 0.0],   # T1ce: -1 (has T1ce, left out)
                          [30.0, 34.0, 50.0, 0.0],   # FLAIR+T1: +4, no T1ce
                          [45.0, 99.0, 50.0, 0.0]],  # Average: not a combination
                         index=["FLAIR", "T1ce", "FLAIR+T1", "Average"], columns=columns)
    assert check("04.1", 3.0, table=table) and check("04.1", 3.04, table=table)  # (2 + 4) / 2
    assert not check("04.1", 5/3, table=table) and "too low" in _said(capsys)  # T1ce row included
    assert not check("04.1", -1.0, table=table)
    assert check("04.1", -1.0, table=table, without="FLAIR")  # only the T1ce row is left
    assert not check("04.1", None, table=table) and "no answer yet" in _said(capsys)


def test_04_2_eq_4_with_teach_all_by_hand(capsys):
    features = torch.tensor([1.0, 2.0, 5.0, 4.0])
    present = torch.tensor([True, True, True, False])
    # teacher FLAIR (1): |1-1| + |1-2| + |1-5| = 5; teacher T1ce (5): |5-1| + |5-2| + |5-5| = 7
    assert check("04.2", 12, features=features, present=present)
    assert not check("04.2", 4, features=features, present=present) and "too low" in _said(capsys)  # students only
    # T2 present as well: + |1-4| + |5-4| = 16
    assert check("04.2", 16, features=features, present=torch.ones(4, dtype=torch.bool))
    # teacher T1 (2) alone: |2-1| + |2-2| + |2-5| = 4
    assert check("04.2", 4, features=features, present=present, teachers=(1,))
    assert not check("04.2", None, features=features, present=present) and "no answer yet" in _said(capsys)


def _right_kd(features, present, teachers, teach):
    """Eq. 4 with p = 1 written out with loops."""
    total = 0.0
    for n in range(features.shape[0]):
        for t in teachers:
            if not present[n, t]:
                continue
            for s in range(features.shape[1]):
                if present[n, s] and (teach == "all" or s not in teachers):
                    total = total + (features[n, t] - features[n, s]).abs().mean()
    return total / features.shape[0]


def test_04_3_a_from_scratch_kd_loss(capsys):
    assert check("04.3", _right_kd)

    def ignores_presence(features, present, teachers, teach):
        return _right_kd(features, torch.ones_like(present), teachers, teach)

    assert not check("04.3", ignores_presence) and "not yet" in _said(capsys)

    def always_students(features, present, teachers, teach):
        return _right_kd(features, present, teachers, "students")

    assert not check("04.3", always_students)
    assert check("04.3", always_students, teach_modes=("students",))
    assert not check("04.3", 7.0) and "a function" in _said(capsys)
    assert not check("04.3", None) and "no answer yet" in _said(capsys)


def test_04_4_combinations_of_one_case_are_not_independent(capsys):
    assert check("04.4", "c") and check("04.4", " C")
    assert not check("04.4", "a") and not check("04.4", "b") and not check("04.4", "d")
    assert not check("04.4", None) and "no answer yet" in _said(capsys)


def _run(values):
    """An evaluate-like table: one case, regions ET/TC/WT with Dice ``values``, under T1 and under FLAIR."""
    rows = [{"case": "c1", "combination": "T1", "region": r, "dice": v} for r, v in zip(("ET", "TC", "WT"), values)]
    rows += [{"case": "c1", "combination": "FLAIR", "region": r, "dice": 0.99} for r in ("ET", "TC", "WT")]
    return pd.DataFrame(rows)


@pytest.fixture
def runs():
    # baseline seed means (T1): 40 %, 50 %, 60 % -> SD (ddof=1) = 10
    return {"baseline": [_run([0.3, 0.4, 0.5]), _run([0.4, 0.5, 0.6]), _run([0.5, 0.6, 0.7])],
            "LCKD-m": [_run([0.5, 0.5, 0.5])]}


def test_04_5_the_seed_spread_of_the_baseline(runs, capsys):
    assert check("04.5", 10.0, runs=runs) and check("04.5", 10.04, runs=runs)
    assert not check("04.5", 8.165, runs=runs) and "too low" in _said(capsys)  # ddof=0
    assert check("04.5", 0.0, runs=runs, method="LCKD-m")  # one seed
    assert not check("04.5", None, runs=runs) and "no answer yet" in _said(capsys)
