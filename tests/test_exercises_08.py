"""Checkers of notebook 08 (mmkd_helpers/exercises/n08_pmix_students.py) on right and wrong answers, with small
hand-made contexts whose expected answers are worked out by hand here."""

import pandas as pd
import torch

from mmkd_helpers.exercises import check, keys_of_notebook


def _said(capsys):
    return capsys.readouterr().out


def test_notebook_08_has_exactly_three_checkers():
    assert keys_of_notebook("08") == ["08.1", "08.2", "08.3"]


def test_08_1_accepts_a_hand_written_kd_and_names_the_reversed_direction(capsys):
    def kd(student, teacher, T):  # KL(p_t || p_s), mean over every element, no T²
        p_t = torch.softmax(teacher / T, dim=1)
        return (p_t * (torch.log(p_t) - torch.log_softmax(student / T, dim=1))).mean()

    def reversed_kd(student, teacher, T):
        p_s = torch.softmax(student / T, dim=1)
        return (p_s * (torch.log(p_s) - torch.log_softmax(teacher / T, dim=1))).mean()

    assert check("08.1", kd) and "correct" in _said(capsys)
    assert not check("08.1", reversed_kd) and "paper's printed direction" in _said(capsys)
    assert not check("08.1", lambda s, t, T: kd(s, t, T) * T**2) and "not yet" in _said(capsys)
    assert not check("08.1", lambda s, t, T: None) and "returns None" in _said(capsys)
    assert not check("08.1", 0.1) and "function itself" in _said(capsys)
    assert not check("08.1", None) and "no answer yet" in _said(capsys)


def _table(values, combination="T1"):
    """A Dice table: one case per value, the same Dice in the three regions."""
    return pd.DataFrame([{"case": f"c{i}", "combination": combination, "region": region, "dice": v}
                         for i, v in enumerate(values) for region in ("ET", "TC", "WT")])


def _tables():
    base = [0.50 + 0.01 * i for i in range(6)]
    return {
        # T1: every seed of the aligned teacher's student 20 points above, seeds 1 point apart: better
        "t1": {"none": [_table(base)],
               "mix": [_table([b + 0.20 + 0.005 * (i % 2) + s for i, b in enumerate(base)]) for s in (-0.01, 0, 0.01)]},
        # T2: the same as the unaligned teacher's student up to ±0.1 points: a tie
        "t2": {"none": [_table(base)],
               "mix": [_table([b + 0.001 * (-1) ** i + s for i, b in enumerate(base)]) for s in (-0.01, 0, 0.01)]},
    }


def test_08_2_counts_the_modalities_where_the_aligned_teachers_student_is_better(capsys):
    tables = _tables()
    assert check("08.2", 1, tables=tables, aligned="mix", unaligned="none") and "correct" in _said(capsys)
    assert check("08.2", 1.0, tables=tables, aligned="mix", unaligned="none")
    assert not check("08.2", 2, tables=tables, aligned="mix", unaligned="none") and "not yet" in _said(capsys)
    assert not check("08.2", 0, tables=tables, aligned="mix", unaligned="none")
    assert not check("08.2", 1.5, tables=tables, aligned="mix", unaligned="none") and "whole number" in _said(capsys)
    assert not check("08.2", None, tables=tables, aligned="mix", unaligned="none") and "no answer yet" in _said(capsys)


def test_08_3_the_sample_sd_of_the_seed_averages(capsys):
    seeds = [_table([v, v]) for v in (0.40, 0.42, 0.44)]  # Avg per seed 40, 42, 44 %: sample SD 2.0
    assert check("08.3", 2.0, seed_tables=seeds) and "correct" in _said(capsys)
    assert not check("08.3", 1.6, seed_tables=seeds) and "too low" in _said(capsys)  # the population SD, 1.63
    assert not check("08.3", 2.0, seed_tables=seeds[:1]) and "at least two seeds" in _said(capsys)
    assert not check("08.3", None, seed_tables=seeds) and "no answer yet" in _said(capsys)
