"""Checkers of notebook 09 (the four methods side by side): Holm by hand, Holm against Bonferroni, the cost of an
election schedule, and the spread a one-seed comparison is read with."""

import numpy as np

from ..evaluation import compare_seeds, holm
from . import checker, is_close


@checker("09.1", hint="sort the four p-values, multiply the i-th smallest by 4 - i + 1 (i from 1), take the "
                      "running maximum in that order, cap at 1, and put each value back in its original place")
def _(answer, p):
    adjusted = np.asarray(answer, dtype=float)
    if adjusted.shape != np.shape(p):
        return False, f"give one adjusted value per raw p-value ({len(p)} of them, in their original order)"
    return bool(np.allclose(adjusted, holm(np.asarray(p, dtype=float)), atol=1e-9))


@checker("09.2", hint="Bonferroni: min(1, m·p) for every cell, m the number of cells tested; count those below 0.05")
def _(answer, cells, n_tests):
    p = cells["p"].to_numpy(dtype=float)
    expected = int((np.minimum(1.0, p * n_tests) < 0.05).sum())  # a cell without a test (NaN) is never significant
    if float(answer) != int(answer):
        return False, "a count of cells is a whole number"
    return is_close(int(answer), expected, abs_=0)


@checker("09.3", hint="compute = steps × (time of a step + election time / 50), divided by the baseline's training "
                      "compute (measured.loc['baseline', 'train_s'])")
def _(answer, measured):
    lckd = measured.loc["lckd"]
    expected = lckd["steps"] * (lckd["step_s"] + lckd["hook_s"] / 50) / measured.loc["baseline", "train_s"]
    return is_close(answer, float(expected), rel=0.02)


@checker("09.4", hint="with one seed on a side there is no standard deviation over seeds to take; look at the "
                      "'spread' column of compare_seeds' row for the mean of the regions")
def _(answer, baseline, method):
    comparison = compare_seeds({"baseline": baseline, "method": method}, "baseline")
    row = comparison[comparison.region == "mean"].iloc[0]
    return is_close(answer, float(row["spread"]), abs_=0.05)
