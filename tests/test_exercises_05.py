"""The checkers of notebook 05 (MetaKD) on right and wrong answers, with hand-made contexts."""

import math

import pandas as pd
import pytest
import torch

from mmkd_helpers.exercises import check, n05_metakd


def _said(capsys):
    return capsys.readouterr().out


def test_05_1_the_pull_asymmetry_is_the_squared_ratio_of_the_extreme_weights(capsys):
    weights = pd.Series([0.5, 0.25, 0.125, 0.125], index=["FLAIR", "T1", "T1ce", "T2"])
    assert check("05.1", 16.0, weights=weights) and "correct" in _said(capsys)  # (0.5 / 0.125)^2 = 4^2
    assert not check("05.1", 4.0, weights=weights) and "too low" in _said(capsys)  # the ratio, not its square
    assert not check("05.1", None, weights=weights) and "no answer yet" in _said(capsys)
    assert check("05.1", 49.0, weights=torch.tensor([0.7, 0.1, 0.1, 0.1]))  # 7 / (1/7)


def _by_hand_kd(features, present, weights, p=1):
    """Eq. 5 written out with loops, as the exercise asks."""
    n, m = features.shape[:2]
    total = 0.0
    for s in range(n):
        for i in range(m):
            for j in range(m):
                if i != j and present[s, i] and present[s, j]:
                    difference = (features[s, i] - features[s, j]).abs() ** p
                    total = total + weights[i] / weights[j] * difference.mean()
    return total / n


def test_05_2_a_from_scratch_eq_5_passes_and_a_wrong_one_is_told_where_it_differs(capsys):
    assert check("05.2", _by_hand_kd) and "correct" in _said(capsys)

    def no_ratio(features, present, weights, p=1):
        return _by_hand_kd(features, present, torch.ones_like(weights), p)

    def always_l1(features, present, weights, p=1):
        return _by_hand_kd(features, present, weights, 1)

    assert not check("05.2", no_ratio) and "differs" in _said(capsys)
    assert not check("05.2", always_l1) and "p = 2" in _said(capsys)
    assert not check("05.2", lambda *args: 1 / 0) and "ZeroDivisionError" in _said(capsys)
    assert not check("05.2", 3.0) and "is a function" in _said(capsys)
    assert not check("05.2", None) and "no answer yet" in _said(capsys)


def test_05_3_relu_starts_farthest_from_uniform_for_one_large_raw_weight(capsys):
    # raw (2, 0, 0, 0): softmax (0.711, 0.096 x3), distance 0.92; relu ~(1, 0, 0, 0), 1.5; sigmoid (0.37, 0.21 x3), 0.24
    raw = torch.tensor([2.0, 0.0, 0.0, 0.0])
    assert check("05.3", " ReLU ", raw=raw) and "correct" in _said(capsys)
    assert not check("05.3", "softmax", raw=raw) and not check("05.3", "sigmoid", raw=raw)
    assert not check("05.3", None, raw=raw) and "no answer yet" in _said(capsys)


class _Scaled:
    def __init__(self, model, scale, level):
        self.scale = scale


def test_05_4_the_prediction_is_judged_on_the_measured_change(monkeypatch, capsys):
    def evaluate(model, volumes, roi_size, combinations, overlap, progress):  # Dice 0.50 unscaled, 0.52 scaled
        value = 0.52 if isinstance(model, _Scaled) else 0.50
        return pd.DataFrame({"region": ["ET", "TC", "WT"], "dice": [value] * 3})

    monkeypatch.setattr("mmkd_helpers.evaluation.evaluate", evaluate)
    monkeypatch.setattr("mmkd_helpers.models.FeatureScaled", _Scaled)
    model = type("M", (), {"config": type("C", (), {"num_modalities": 4})()})()
    context = dict(model=model, weights=[0.25] * 4, volumes=[], roi_size=(8, 8, 8), overlap=0.5)
    assert n05_metakd.scaled_dice_change(**context) == pytest.approx(2.0)  # 100 * (0.52 - 0.50)
    assert check("05.4", "yes", **context) and "correct" in _said(capsys)
    assert not check("05.4", "no", **context) and "not yet" in _said(capsys)
    assert not check("05.4", "maybe", **context) and "'yes' or 'no'" in _said(capsys)
    monkeypatch.setattr(n05_metakd, "scaled_dice_change", lambda *args: -0.4)
    assert check("05.4", "no", **context) and not check("05.4", "yes", **context)
    assert not check("05.4", None, **context) and "no answer yet" in _said(capsys)


def test_05_5_the_prediction_is_judged_on_how_far_w_moved(monkeypatch, capsys):
    moved = {0.0: 0.05, 5e-4: 0.04}
    monkeypatch.setattr(n05_metakd, "meta_phase_change", lambda *args: moved[args[6]])
    context = dict(model=None, dataset=None, train_config=None, val_volumes=[], seed=0, meta_steps=3)
    assert check("05.5", "yes", **context) and "correct" in _said(capsys)
    assert not check("05.5", "no", **context)
    moved[5e-4] = 0.06
    assert check("05.5", "no", **context) and not check("05.5", "yes", **context)
    assert not check("05.5", None, **context) and "no answer yet" in _said(capsys)
    assert math.isclose(moved[0.0], 0.05)


def test_notebook_05_has_exactly_five_checkers():
    from mmkd_helpers.exercises import keys_of_notebook

    assert keys_of_notebook("05") == ["05.1", "05.2", "05.3", "05.4", "05.5"]
