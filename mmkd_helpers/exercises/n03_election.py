"""Checkers of notebook 03 (LCKD, part 1: teacher election). Each computes its expected answer from the tables
the notebook measured (passed as context), never from a number typed here."""

import numpy as np
import pandas as pd

from ..constants import MODALITY_NAMES, REGION_NAMES
from . import checker, is_close, is_option


def _winner(row) -> str:
    """The modality of a row's maximum, ties to the lower modality index (Eq. 1 as the package elects)."""
    ordered = row.reindex([m for m in MODALITY_NAMES if m in row.index]).astype(float)
    return str(ordered.index[int(np.argmax(ordered.to_numpy()))])


def _modality(answer) -> str:
    """A modality name as the learner may write it ("t1ce", " FLAIR ") in the course's spelling."""
    spelled = {m.lower(): m for m in MODALITY_NAMES}
    name = str(answer).strip()
    if name.lower() not in spelled:
        raise ValueError(f"{answer!r} is not a modality name ({', '.join(MODALITY_NAMES)})")
    return spelled[name.lower()]


@checker("03.1", hint="take the TC row of the single-modality table `dice` and find its largest value; "
                      "the answer is a modality name such as 'T2'")
def _(answer, dice, region="TC"):
    return _modality(answer) == _winner(dice.loc[region])


@checker("03.2", hint="in Dice points: 100 times the TC row of `dice`, its largest value minus its second-largest")
def _(answer, table, region="TC"):
    """``table``: single-modality Dice in %, regions x modalities."""
    row = np.sort(table.loc[region].astype(float).to_numpy())[::-1]
    return is_close(answer, float(row[0] - row[1]), abs_=0.051)


@checker("03.3", hint="a region counts when the seeds' rows of `seed_winners` do not all name the same modality; "
                      "answer a list of region names, [] if there is none")
def _(answer, seed_winners):
    if isinstance(answer, str):
        answer = [answer]
    given = {str(r).strip().upper() for r in answer}
    unknown = given - set(REGION_NAMES)
    if unknown:
        return False, f"{sorted(unknown)} are not regions ({', '.join(REGION_NAMES)})"
    changing = {r for r in REGION_NAMES if seed_winners[r].nunique() > 1}
    if given == changing:
        return True
    if given < changing:
        return False, "a region is missing from your list: compare every region's column over the seeds"
    return False, "your list holds a region whose winner is the same for every seed"


def _three_way_table() -> pd.DataFrame:
    """Three regions, three different winners, and near-ties that a sloppy argmax gets wrong."""
    return pd.DataFrame([[0.2, 0.1, 0.6, 0.3], [0.5, 0.5, 0.1, 0.4], [0.1, 0.2, 0.3, 0.7]],
                        index=list(REGION_NAMES), columns=list(MODALITY_NAMES))


@checker("03.4", hint="my_elect(table, phi) must return the sorted list of teacher names: phi='unique' the distinct "
                      "per-region winners, phi='most_frequent' the one modality that wins most regions; a tie goes "
                      "to the modality listed first in MODALITY_NAMES")
def _(answer, dice):
    from ..methods.lckd import elect

    if not callable(answer):
        return False, "the answer is a function: my_elect(table, phi)"
    shuffled = dice[list(dice.columns)[::-1]]  # the columns in another order must not change the election
    for table in (dice, _three_way_table(), shuffled):
        for phi in ("unique", "most_frequent"):
            expected = [MODALITY_NAMES[i] for i in elect(table, phi=phi)[1]]
            got = answer(table.copy(), phi)
            if list(got) != expected:
                return False, (f"with phi={phi!r} your function returns {list(got)} on a table of the check "
                               "(not necessarily the notebook's); look at ties and at the order of the result")
    return True


_TEST_SPLIT = "0a8351b614dc2b7d4d284e8184aaab57ef59dfc0fba6da4ad26153e20f15b0b9"  # digest("03.5", <the right option>)


@checker("03.5", hint="what are the test cases for? Ask what a choice made by looking at them does to the test score, "
                      "even when this choice happens to come out the same")
def _(answer):
    return is_option("03.5", answer, _TEST_SPLIT)
