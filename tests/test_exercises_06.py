"""The checkers of notebook 06 (ProtoKD) on right and wrong answers, with hand-made contexts."""

import math

import pandas as pd
import torch

from mmkd_helpers.exercises import check, n06_protokd


def _said(capsys):
    return capsys.readouterr().out


def test_06_1_the_printed_kl_direction_by_hand(capsys):
    student, teacher = torch.zeros(1, 3, 1), torch.tensor([2.0, 0.0, -2.0]).view(1, 3, 1)
    z = math.exp(2) + 1 + math.exp(-2)
    p_t = [math.exp(2) / z, 1 / z, math.exp(-2) / z]
    paper = sum(1 / 3 * math.log((1 / 3) / p) for p in p_t)  # KL(p_s || p_t), summed over the 3 classes
    code = sum(p * math.log(p / (1 / 3)) for p in p_t)  # the other direction
    context = dict(student=student, teacher=teacher, temperature=1.0)
    assert check("06.1", paper, **context) and "correct" in _said(capsys)
    assert not check("06.1", code, **context) and "too low" in _said(capsys)
    assert not check("06.1", paper / 3, **context)  # averaged over the classes, not summed
    assert not check("06.1", None, **context) and "no answer yet" in _said(capsys)


def test_06_2_the_batch_rule_keeps_the_classes_every_patch_has(capsys):
    labels = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 2]])  # class 3 only in the first patch
    assert check("06.2", [0, 1, 2], labels=labels, num_classes=4) and "correct" in _said(capsys)
    assert check("06.2", (2, 1, 0), labels=labels, num_classes=4)
    assert not check("06.2", [0, 1, 2, 3], labels=labels, num_classes=4) and "not yet" in _said(capsys)
    assert not check("06.2", 3, labels=labels, num_classes=4) and "list of class indices" in _said(capsys)
    assert not check("06.2", None, labels=labels, num_classes=4) and "no answer yet" in _said(capsys)


def _by_hand_maps(features, classes, num_classes):
    """Eqs. 2-3 written out: masked means, then cosines (the package's epsilon is far below the tolerance)."""
    n = features.shape[0]
    flat, labels = features.flatten(2), classes.flatten(1)
    maps = torch.zeros(n, num_classes, flat.shape[2])
    for s in range(n):
        for k in range(num_classes):
            prototype = flat[s][:, labels[s] == k].mean(dim=1)
            for i in range(flat.shape[2]):
                z = flat[s][:, i]
                maps[s, k, i] = z @ prototype / (z.norm() * prototype.norm())
    return maps.view(n, num_classes, *features.shape[2:])


def test_06_3_a_from_scratch_i2fv_map_passes_and_a_dot_product_does_not(capsys):
    assert check("06.3", _by_hand_maps) and "correct" in _said(capsys)

    def dot_product(features, classes, num_classes):
        maps = _by_hand_maps(features, classes, num_classes)
        return maps * features.norm(dim=1, keepdim=True)  # not normalised by the voxel's feature

    assert not check("06.3", dot_product) and "differ" in _said(capsys)
    assert not check("06.3", lambda f, c, k: torch.zeros(3)) and "shape" in _said(capsys)
    assert not check("06.3", lambda f, c, k: {}[0]) and "KeyError" in _said(capsys)
    assert not check("06.3", None) and "no answer yet" in _said(capsys)


def test_06_4_the_prediction_is_judged_on_both_directions(monkeypatch, capsys):
    values = {"code": 0.02, "paper": 0.03}
    monkeypatch.setattr(n06_protokd, "kd_directions", lambda *args: values)
    context = dict(student=None, teacher=None, dataset=None, temperature=10.0)
    assert check("06.4", "larger", **context) and "correct" in _said(capsys)
    assert not check("06.4", "smaller", **context)
    values["paper"] = 0.01
    assert check("06.4", "Smaller", **context) and not check("06.4", "larger", **context)
    assert not check("06.4", "equal", **context) and "'larger' or 'smaller'" in _said(capsys)
    assert not check("06.4", None, **context) and "no answer yet" in _said(capsys)


def _tables(gains):
    margins = [1.0, 2.0, 3.0, 4.0]
    keys = [("T1", "ET"), ("T1", "WT"), ("T2", "ET"), ("T2", "WT")]
    teacher_vs = pd.DataFrame([{"student": m, "region": r, "difference": d} for (m, r), d in zip(keys, margins)]
                              + [{"student": "T1", "region": "mean", "difference": 99.0}])
    protokd_vs = pd.DataFrame([{"modality": m, "region": r, "difference": d} for (m, r), d in zip(keys, gains)]
                              + [{"modality": "T2", "region": "mean", "difference": -99.0}])
    return dict(teacher_vs=teacher_vs, protokd_vs=protokd_vs)


def test_06_5_the_correlation_of_margin_and_gain(capsys):
    assert check("06.5", 1.0, **_tables([2.0, 4.0, 6.0, 8.0])) and "correct" in _said(capsys)  # gain = 2 x margin
    assert check("06.5", -1.0, **_tables([8.0, 6.0, 4.0, 2.0]))
    # gains (1, 3, 2, 4) against margins (1, 2, 3, 4): deviations (-1.5, .5, -.5, 1.5) and (-1.5, -.5, .5, 1.5) -> 4/5
    assert check("06.5", 0.8, **_tables([1.0, 3.0, 2.0, 4.0]))
    assert n06_protokd.margin_gain_correlation(**_tables([1.0, 3.0, 2.0, 4.0]))[1] == 4
    assert not check("06.5", 0.5, **_tables([2.0, 4.0, 6.0, 8.0])) and "too low" in _said(capsys)
    assert not check("06.5", None, **_tables([2.0, 4.0, 6.0, 8.0])) and "no answer yet" in _said(capsys)


def test_notebook_06_has_exactly_five_checkers():
    from mmkd_helpers.exercises import keys_of_notebook

    assert keys_of_notebook("06") == ["06.1", "06.2", "06.3", "06.4", "06.5"]
