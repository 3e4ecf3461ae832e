"""The checkers of notebook 03 (mmkd_helpers.exercises.n03_election) on right and wrong answers, with small tables
whose answers are worked out by hand here."""

import pandas as pd
import pytest

from mmkd_helpers.exercises import check

MODALITIES = ["FLAIR", "T1", "T1ce", "T2"]
REGIONS = ["ET", "TC", "WT"]


@pytest.fixture
def dice():
    # ET: T1ce best; TC: FLAIR and T2 tie at 0.5 -> FLAIR (the lower index); WT: T2 best
    return pd.DataFrame([[0.2, 0.1, 0.6, 0.3], [0.5, 0.2, 0.1, 0.5], [0.3, 0.1, 0.2, 0.8]],
                        index=REGIONS, columns=MODALITIES)


def _said(capsys):
    return capsys.readouterr().out


def test_03_1_the_tc_winner_ties_to_the_lower_index(dice, capsys):
    assert check("03.1", "FLAIR", dice=dice) and check("03.1", " flair ", dice=dice)
    assert not check("03.1", "T2", dice=dice)
    assert not check("03.1", "T1ce", dice=dice, region="TC")
    assert check("03.1", "T1ce", dice=dice, region="ET")
    assert not check("03.1", "brain", dice=dice) and "not a modality" in _said(capsys)
    assert not check("03.1", None, dice=dice) and "no answer yet" in _said(capsys)


def test_03_2_the_margin_of_the_winner(capsys):
    table = pd.DataFrame([[20.0, 10.0, 40.0, 25.0], [55.0, 40.0, 41.0, 52.5], [60.0, 40.0, 45.0, 50.0]],
                         index=REGIONS, columns=MODALITIES)
    assert check("03.2", 2.5, table=table)  # TC: 55.0 - 52.5
    assert check("03.2", 2.53, table=table)
    assert not check("03.2", 3.0, table=table) and "too high" in _said(capsys)
    assert not check("03.2", 15.0, table=table)  # largest minus smallest, not the runner-up
    assert check("03.2", 15.0, table=table, region="ET")  # 40 - 25
    assert not check("03.2", None, table=table) and "no answer yet" in _said(capsys)


def test_03_3_regions_whose_winner_changes_with_the_seed(capsys):
    seed_winners = pd.DataFrame({"ET": ["T1ce", "T1ce", "T1ce"], "TC": ["FLAIR", "FLAIR", "T2"],
                                 "WT": ["FLAIR", "T2", "FLAIR"]}, index=["s0", "s1", "s2"])
    assert check("03.3", ["TC", "WT"], seed_winners=seed_winners)
    assert check("03.3", ["wt", "tc"], seed_winners=seed_winners)
    assert not check("03.3", ["TC"], seed_winners=seed_winners) and "missing" in _said(capsys)
    assert not check("03.3", ["ET", "TC", "WT"], seed_winners=seed_winners) and "same for every seed" in _said(capsys)
    assert not check("03.3", ["XX"], seed_winners=seed_winners) and "not regions" in _said(capsys)
    one_seed = seed_winners.iloc[:1]
    assert check("03.3", [], seed_winners=one_seed) and not check("03.3", ["TC"], seed_winners=one_seed)
    assert not check("03.3", None, seed_winners=seed_winners) and "no answer yet" in _said(capsys)


def _right_elect(table, phi):
    """Eqs. 1-2 written out: winners by hand, ties to the first modality in the course's order."""
    winners = []
    for region in table.index:
        row = table.loc[region]
        best = max(row[m] for m in MODALITIES if m in row.index)
        winners.append(next(m for m in MODALITIES if m in row.index and row[m] == best))
    if phi == "unique":
        return [m for m in MODALITIES if m in winners]
    top = max(winners.count(m) for m in winners)
    return [next(m for m in MODALITIES if winners.count(m) == top)]


def test_03_4_a_from_scratch_election(dice, capsys):
    assert check("03.4", _right_elect, dice=dice)
    # idxmax ties to the first column, which is the wrong modality once the columns are reordered
    naive = lambda table, phi: sorted(set(table.idxmax(axis=1))) if phi == "unique" else [table.idxmax(axis=1).mode()[0]]  # noqa: E731
    assert not check("03.4", naive, dice=dice) and "not yet" in _said(capsys)
    assert not check("03.4", lambda table, phi: ["T1ce"], dice=dice)
    assert not check("03.4", "T1ce", dice=dice) and "a function" in _said(capsys)
    assert not check("03.4", None, dice=dice) and "no answer yet" in _said(capsys)


def test_03_5_the_test_split_is_never_used_to_elect(capsys):
    assert check("03.5", "b") and check("03.5", " B ")
    assert not check("03.5", "a") and not check("03.5", "c")
    assert not check("03.5", None) and "no answer yet" in _said(capsys)
