"""The checkers of notebook 09 on right and wrong answers, with expected values worked out by hand here."""

import numpy as np
import pandas as pd
from mmkd_helpers.exercises import check


def test_09_1_holm_by_hand(capsys):
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert check("09.1", [0.03, 0.06, 0.06, 0.02], p=p)
    assert not check("09.1", [0.04, 0.16, 0.12, 0.02], p=p)  # Bonferroni, not Holm
    assert not check("09.1", [0.03, 0.06, 0.02], p=p)
    assert "one adjusted value per raw p-value" in capsys.readouterr().out
    assert not check("09.1", None, p=p) and "no answer yet" in capsys.readouterr().out


def test_09_2_counts_bonferroni_rejections():
    cells = pd.DataFrame({"p": [0.001, 0.01, 0.02, np.nan, 0.5]})
    # m = 5: 0.005, 0.05, 0.1, NaN, 1 -> only the first is below 0.05
    assert check("09.2", 1, cells=cells, n_tests=5)
    assert not check("09.2", 2, cells=cells, n_tests=5)
    assert not check("09.2", 1.5, cells=cells, n_tests=5)


def test_09_3_compute_of_an_election_every_50_steps():
    measured = pd.DataFrame({"steps": [1000, 1000], "step_s": [0.2, 0.1], "hook_s": [10.0, 0.0],
                             "train_s": [0.0, 100.0]}, index=["lckd", "baseline"])
    # 1000 x (0.2 + 10 / 50) / 100 = 4.0
    assert check("09.3", 4.0, measured=measured) and check("09.3", 4.05, measured=measured)
    assert not check("09.3", 2.2, measured=measured)  # election every 250 steps: 1000 x 0.24 / 100


def _table(seed_dice):
    rows = [{"case": f"c{i}", "combination": "FLAIR", "region": region, "dice": d}
            for i, d in enumerate(seed_dice) for region in ("ET", "TC", "WT")]
    return pd.DataFrame(rows)


def test_09_4_the_spread_of_a_one_seed_comparison_is_zero():
    baseline, method = [_table([0.5, 0.6, 0.7])], [_table([0.6, 0.7, 0.8])]
    assert check("09.4", 0.0, baseline=baseline, method=method)
    assert not check("09.4", 10.0, baseline=baseline, method=method)
