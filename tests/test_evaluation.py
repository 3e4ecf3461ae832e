import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ttest_rel

from mmkd_helpers.constants import COMBINATIONS, REGION_NAMES, combination_name
from mmkd_helpers.evaluation import (dice_table, evaluate, logits_to_label, paired_ttest, predict_logits,
                                     region_dice)
from mmkd_helpers.losses import region_targets
from mmkd_helpers.models import ModelConfig


def test_logits_to_label_is_hierarchical():
    # voxels: background, WT only, TC only, ET only (ET inside TC inside WT after rebuilding)
    logits = torch.tensor([[-1, -1, -1, 1], [-1, -1, 1, -1], [-1, 1, -1, -1]], dtype=torch.float32)
    assert logits_to_label(logits).tolist() == [0, 2, 1, 4]
    classes = torch.eye(4)[[0, 3, 1, 2]].T  # argmax per voxel: 0, 3, 1, 2
    assert logits_to_label(classes, "classes").tolist() == [0, 4, 1, 2]


def test_region_dice_by_hand():
    truth = np.array([0, 2, 2, 1, 4, 4])
    pred = np.array([0, 2, 0, 1, 4, 0])
    # ET: pred {4}, truth {4, 5} -> 2*1/(1+2); TC: pred {3, 4}, truth {3, 4, 5} -> 2*2/(2+3);
    # WT: pred {1, 3, 4}, truth {1, 2, 3, 4, 5} -> 2*3/(3+5)
    assert np.allclose(region_dice(pred, truth), [2 / 3, 4 / 5, 6 / 8])


def test_region_dice_empty_prediction_of_empty_truth_is_one():
    assert region_dice(np.zeros(5), np.zeros(5)).tolist() == [1.0, 1.0, 1.0]
    assert region_dice(np.array([4, 0]), np.zeros(2))[0] == 0.0


class Oracle(torch.nn.Module):
    """Returns the true regions wherever FLAIR is present, nothing otherwise: a model with known Dice."""

    def __init__(self, label):
        super().__init__()
        self.config = ModelConfig()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.truth = (region_targets(torch.as_tensor(label)[None].long())[0] * 2 - 1) * 5

    def forward(self, image, present):
        from types import SimpleNamespace

        # The sliding window hands over crops: recover them from the image channel holding coordinates.
        idx = image[:, 0].round().long().clamp(min=0)
        logits = self.truth.flatten(1)[:, idx.flatten()].view(3, *idx.shape).movedim(0, 1)
        logits = torch.where(present[:, 0].view(-1, 1, 1, 1, 1), logits, torch.full_like(logits, -5))
        return SimpleNamespace(logits=logits + self.weight)


def test_evaluate_with_an_oracle_gives_known_dice():
    label = np.zeros((16, 16, 16), np.uint8)
    label[4:10, 4:10, 4:10] = 2
    label[5:8, 5:8, 5:8] = 1
    label[6, 6, 6] = 4
    images = np.zeros((4, 16, 16, 16), np.float32)
    images[0] = np.arange(16 ** 3).reshape(16, 16, 16)  # voxel index, so each window knows where it is
    model = Oracle(label)
    logits = predict_logits(model, images, [True, False, False, False], roi_size=(8, 8, 8), overlap=0.25)
    assert np.array_equal(logits_to_label(logits), label)
    results = evaluate(model, [("case0", images, label)], roi_size=(8, 8, 8), progress=False)
    assert len(results) == 15 * 3
    with_flair = results[results.combination.str.contains("FLAIR")]
    assert (with_flair.dice == 1.0).all() and (results[~results.index.isin(with_flair.index)].dice == 0.0).all()


def fake_results(offset, seed, cases=3):
    rng = np.random.default_rng(seed)
    rows = [{"case": f"c{c}", "combination": combination_name(p), "n_present": sum(p), "region": r,
             "dice": float(np.clip(0.5 + offset + 0.05 * sum(p) + rng.normal(0, 0.05), 0, 1))}
            for c in range(cases) for p in COMBINATIONS for r in REGION_NAMES]
    return pd.DataFrame(rows)


def test_dice_table_has_the_shape_of_lckd_table_1():
    a, b = fake_results(0.1, 0), fake_results(0.0, 1)
    table = dice_table({"LCKD": a, "baseline": b})
    assert list(table.index) == [combination_name(p) for p in COMBINATIONS] + ["Average"]
    assert table.columns[:4].get_level_values(1).tolist() == ["FLAIR", "T1", "T1ce", "T2"]
    assert table.loc["FLAIR", ("", "FLAIR")] == "●" and table.loc["FLAIR", ("", "T2")] == "○"
    expected = a[(a.region == "ET") & (a.combination == "T1")].dice.mean() * 100
    assert table.loc["T1", ("ET", "LCKD")] == pytest.approx(expected)
    assert table.loc["Average", ("WT", "baseline")] == pytest.approx(
        table.iloc[:15][("WT", "baseline")].astype(float).mean())


def test_paired_ttest_matches_scipy_and_is_one_tailed():
    a, b = fake_results(0.05, 0), fake_results(0.0, 1)
    p = paired_ttest(a, b, "ET")
    means = lambda df: df[df.region == "ET"].groupby("combination", sort=False).dice.mean()  # noqa: E731
    assert p == pytest.approx(ttest_rel(means(a), means(b), alternative="greater").pvalue)
    assert p < 0.01 and paired_ttest(b, a, "ET") > 0.99
    assert paired_ttest(a, b, "ET", unit="case") < 0.01
