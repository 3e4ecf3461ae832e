"""The checkers of notebook 02 (mmkd_helpers.exercises.n02_baseline) on right and wrong answers, with contexts made
by hand and expected values worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from mmkd_helpers.exercises import check
from mmkd_helpers.exercises import n02_baseline
from mmkd_helpers.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def tiny():
    """A tiny random network that already fills its skips with the mean, and one 16^3 case: switching it to
    fill_skips="mean" changes nothing (0 points), and a window of the training crop against itself gains 0."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=4, depth=3, fill_skips="mean")).eval()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    label = np.zeros((16, 16, 16), dtype=np.uint8)
    label[4:10, 4:10, 4:10] = 2
    label[6:8, 6:8, 6:8] = 4
    return model, [("case", images, label)]


@pytest.mark.parametrize("change, right", [(2.0, "a"), (-2.0, "b"), (0.5, "c"), (-1.0, "c")])
def test_02_1_the_option_follows_the_measured_change(monkeypatch, change, right):
    monkeypatch.setattr(n02_baseline, "mean_skip_change", lambda *args: change)
    context = dict(model=None, volumes=[], roi_size=(16, 16, 16), overlap=0.5)
    assert check("02.1", right, **context) and check("02.1", right.upper(), **context)
    assert not any(check("02.1", o, **context) for o in "abc" if o != right)


def test_02_1_measures_nothing_when_the_rule_does_not_change(tiny, capsys):
    model, volumes = tiny
    assert n02_baseline.mean_skip_change(model, volumes, (16, 16, 16), 0.25) == pytest.approx(0.0, abs=1e-9)
    assert check("02.1", "c", model=model, volumes=volumes, roi_size=(16, 16, 16), overlap=0.25)
    assert not check("02.1", None, model=model, volumes=volumes, roi_size=(16, 16, 16), overlap=0.25)
    assert "no answer yet" in capsys.readouterr().out


def _results():
    """Single-modality rows by hand: ET best with T1ce (0.6), TC and WT best with FLAIR (0.7, 0.8); a pair with
    higher Dice everywhere that the answer must ignore."""
    dice = {"FLAIR": (0.3, 0.7, 0.8), "T1": (0.1, 0.2, 0.3), "T1ce": (0.6, 0.5, 0.4), "T2": (0.2, 0.6, 0.7),
            "FLAIR+T1ce": (0.9, 0.9, 0.9)}
    rows = [{"case": case, "combination": name, "n_present": name.count("+") + 1, "region": region,
             "dice": value + 0.01 * case}
            for case in range(2) for name, values in dice.items() for region, value in zip(("ET", "TC", "WT"), values)]
    return pd.DataFrame(rows)


def test_02_2_best_single_modality_per_region(capsys):
    results = _results()
    assert check("02.2", {"ET": "T1ce", "TC": "FLAIR", "WT": "FLAIR"}, results=results)
    assert check("02.2", {"et": "t1ce", "tc": "flair", "wt": "flair"}, results=results)
    assert not check("02.2", {"ET": "FLAIR+T1ce", "TC": "FLAIR", "WT": "FLAIR"}, results=results)
    assert "ET" in capsys.readouterr().out
    assert not check("02.2", "T1ce", results=results)
    assert not check("02.2", None, results=results)


def test_02_3_no_modality_is_refused():
    assert check("02.3", "b") and not check("02.3", "a") and not check("02.3", "c") and not check("02.3", "d")


def test_02_4_window_gain_on_test(tiny, capsys):
    model, volumes = tiny
    context = dict(model=model, volumes=volumes, chosen=16, crop=16, overlap=0.25)
    assert check("02.4", 0.0, **context) and check("02.4", 0.2, **context)  # the same window: no gain
    assert not check("02.4", 5.0, **context) and "too high" in capsys.readouterr().out
    assert not check("02.4", None, **context)


def test_02_5_eq5_from_scratch(capsys):
    def right(features, present):
        weight = present.float().view(*present.shape, *([1] * (features.dim() - 2)))
        mean = (features * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True)
        return torch.where(weight.bool(), features, mean)

    def over_all(features, present):  # averages the missing modalities too
        weight = present.view(*present.shape, *([1] * (features.dim() - 2)))
        return torch.where(weight, features, features.mean(1, keepdim=True))

    assert check("02.5", right)
    assert not check("02.5", over_all) and "differ" in capsys.readouterr().out
    assert not check("02.5", "fill_missing")
    assert not check("02.5", None)


def _table(values):
    """An evaluate()-shaped table: region -> Dice of two cases (the per-region mean is their mean)."""
    return pd.DataFrame([{"case": c, "region": r, "dice": d} for r, pair in values.items() for c, d in enumerate(pair)])


def test_02_1_and_02_4_read_the_notebooks_measured_tables():
    # means over the regions: zero (0.2 + 0.4 + 0.6) / 3 = 40 %; mean-filled (0.1 + 0.2 + 0.3) / 3 = 20 %: -20 points
    zero = _table({"ET": (0.1, 0.3), "TC": (0.4, 0.4), "WT": (0.5, 0.7)})
    mean = _table({"ET": (0.1, 0.1), "TC": (0.2, 0.2), "WT": (0.3, 0.3)})
    assert check("02.1", "b", dice={"zero": zero, "mean": mean})
    assert not check("02.1", "a", dice={"zero": zero, "mean": mean})
    assert check("02.1", "a", dice={"zero": mean, "mean": zero})
    # chosen window 40 %, training crop 20 %: a gain of 20 points
    assert check("02.4", 20.0, dice={"chosen": zero, "crop": mean})
    assert check("02.4", 20.2, dice={"chosen": zero, "crop": mean})
    assert not check("02.4", -20.0, dice={"chosen": zero, "crop": mean})
    assert not check("02.4", 0.2, dice={"chosen": zero, "crop": mean})
