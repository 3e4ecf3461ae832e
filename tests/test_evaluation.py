import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ttest_rel

from mmkd_helpers.constants import COMBINATIONS, REGION_NAMES, combination_name
from mmkd_helpers.evaluation import (BRATS_HD95_PENALTY, dice_table, evaluate, logits_to_label, paired_ttest,
                                     predict_logits, region_dice, region_hd95)
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


def test_region_hd95_of_two_voxels_by_hand():
    """One ET voxel each, 3 voxels apart along the first axis: 3 x 2 mm = 6 mm whatever the other axes' spacing;
    along the second axis with spacing (2, 1, 1): 3 mm; 3 and 4 voxels apart at 1 mm: the 3-4-5 triangle, 5 mm."""
    a, b, c, d = (np.zeros((10, 10, 10), np.uint8) for _ in range(4))
    a[2, 5, 5] = b[5, 5, 5] = c[2, 8, 5] = d[2, 2, 1] = 4
    assert np.allclose(region_hd95(a, b, 2.0), [6, 6, 6])
    assert np.allclose(region_hd95(a, b, (2, 0.5, 0.5)), [6, 6, 6])
    assert np.allclose(region_hd95(a, c, (2, 1, 1)), [3, 3, 3])
    assert np.allclose(region_hd95(a, d), [5, 5, 5])


def test_region_hd95_of_a_cube_shifted_by_one_voxel():
    """A 4³ WT cube against the same cube one voxel further along an axis. Surface voxels of either cube lie on the
    other's surface (distance 0) or one voxel from it (its leading face, and the interior of its trailing face):
    20 of the 56 surface voxels, more than 5 %, so the 95th percentile is one voxel: 2 mm along the axis of spacing
    2, 1 mm along an axis of spacing 1. ET and TC are empty in both: 0."""
    cube, shifted, sideways = (np.zeros((12, 12, 12), np.uint8) for _ in range(3))
    cube[2:6, 2:6, 2:6] = 2
    shifted[3:7, 2:6, 2:6] = 2
    sideways[2:6, 3:7, 2:6] = 2
    assert np.allclose(region_hd95(cube, shifted, (2, 1, 1)), [0, 0, 2])
    assert np.allclose(region_hd95(cube, sideways, (2, 1, 1)), [0, 0, 1])
    assert np.allclose(region_hd95(cube, cube, 3.0), [0, 0, 0])


def test_region_hd95_of_empty_masks_follows_brats():
    """Both empty: 0 (and Dice 1); exactly one empty: the BraTS penalty, the diagonal of 240 x 240 x 155 at 1 mm
    (and Dice 0)."""
    assert BRATS_HD95_PENALTY == pytest.approx(np.sqrt(240 ** 2 + 240 ** 2 + 155 ** 2), abs=0.005)
    empty, tumour = np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 8), np.uint8)
    tumour[3:5, 3:5, 3:5] = 2  # WT only
    for pred, truth in ((tumour, empty), (empty, tumour)):
        assert region_hd95(pred, truth, 2.0).tolist() == [0.0, 0.0, BRATS_HD95_PENALTY]
        assert region_dice(pred, truth).tolist() == [1.0, 1.0, 0.0]
    assert region_hd95(empty, empty).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="spacing must be a positive number of mm"):
        region_hd95(tumour, tumour, (1, 0, 1))
    with pytest.raises(ValueError, match="one shape"):
        region_hd95(tumour, tumour[:4])


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
    assert "hd95" not in results

    scored = evaluate(model, [("case0", images, label)], roi_size=(8, 8, 8), progress=False, hd95=True,
                      spacing={"case0": (1.0, 2.0, 2.0)})
    assert np.array_equal(scored.dice, results.dice)
    flair = scored.combination.str.contains("FLAIR")
    assert (scored.hd95[flair] == 0.0).all() and (scored.hd95[~flair] == BRATS_HD95_PENALTY).all()  # nothing found
    with pytest.raises(ValueError, match="spacing: no voxel size for case case0"):
        evaluate(model, [("case0", images, label)], (8, 8, 8), progress=False, hd95=True, spacing={"c1": 1.0})


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
    with pytest.raises(ValueError, match="must cover the same cases"):
        paired_ttest(a, fake_results(0.0, 1, cases=2), "ET", unit="case")


def test_evaluate_refuses_a_case_without_a_label_map():
    from mmkd_helpers.models import build_model

    model = build_model(ModelConfig(base_channels=2, depth=2))
    with pytest.raises(ValueError, match="case c: no label map"):
        evaluate(model, [("c", np.zeros((4, 8, 8, 8), np.float32), None)], (8, 8, 8), progress=False)


def test_check_window_accepts_the_training_crop_only():
    from mmkd_helpers.evaluation import check_window

    assert check_window([32, 32, 32], (32, 32, 32)) == (32, 32, 32)
    with pytest.raises(ValueError, match=r"differs from the training crop \(32, 32, 32\)"):
        check_window((64, 64, 64), (32, 32, 32))


def test_feature_variation_by_hand():
    """Two patches; modality 0's single feature element is 1 then 3 (SD 1.414, mean |f| 2: CV 0.707),
    modality 1's is 5 both times (CV 0)."""
    from types import SimpleNamespace

    from mmkd_helpers.analysis import feature_variation

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, image):
            values = torch.stack([image[:, 0, 0, 0], torch.full_like(image[:, 0, 0, 0], 5.0)], dim=1)
            return SimpleNamespace(features=[values.view(-1, 2, 1, 1)])

    patches = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 2, 1, 1).contiguous()
    assert np.allclose(feature_variation(Fixed(), patches, level=0), [np.sqrt(2) / 2, 0.0])


def test_feature_reliance_sees_a_pathway_the_decoder_uses_and_one_it_does_not():
    """A trained toy model: zeroing its first level (everything reads it) costs Dice; a bottleneck whose
    decoder weights are zero costs nothing. (Whether the bottleneck of a trained model matters depends on the
    task: this toy one is solved by intensity alone, through the skips.)"""
    from mmkd_helpers.dataset import PatchDataset
    from mmkd_helpers.analysis import feature_reliance
    from mmkd_helpers.models import build_model
    from mmkd_helpers.training import TrainConfig, Trainer
    from test_training import toy_volumes

    volumes = toy_volumes(4, size=16)
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=4, depth=3))
    Trainer(model, PatchDataset(volumes[:3], (16, 16, 16), seed=0), TrainConfig(steps=60, lr=1e-2, batch_size=2),
            device="cpu", progress=False).fit()
    cases = [(f"c{i}", *v) for i, v in enumerate(volumes)]
    combos = [(True, True, True, True)]
    used = feature_reliance(model.eval(), cases, (16, 16, 16), level=0, combinations=combos, n_patches=4)
    assert used["drop"] > 10 and used["dice"] > used["dice_zeroed"]
    assert set(used["variation"]) == {"FLAIR", "T1", "T1ce", "T2"} and min(used["variation"].values()) > 0.1
    with torch.no_grad():
        model.upsample[-1].weight.zero_()  # the decoder's only read of the bottleneck
    dead = feature_reliance(model, cases, (16, 16, 16), combinations=combos, n_patches=4)
    assert dead["drop"] == pytest.approx(0.0, abs=1e-6)


def _table(values: dict) -> "pd.DataFrame":
    """An evaluate()-shaped table from {(case, region): dice}, one combination."""
    return pd.DataFrame([{"case": c, "combination": "T1", "n_present": 1, "region": r, "dice": d}
                         for (c, r), d in values.items()])


def test_compare_seeds_by_hand():
    """Two cases, regions ET/TC/WT, 2 seeds each. Baseline: every Dice 0.5 in seed 0 and 0.6 in seed 1
    (seed means 50 and 60: mean 55, SD 7.07). Method A: 0.9 and 0.9 on case 1, 0.7 and 0.9 on case 2
    (seed means 80, 90: mean 85, SD 7.07): +30 points, far beyond the spread; per-case means (0.9, 0.8)
    against (0.55, 0.55): differences 0.35 and 0.25, t = 0.30 / 0.05 = 6 with 1 df, p = 2 (1/2 - arctan(6) / π)
    = 0.105, not significant: a tie. Method B equals
    the baseline plus 0.001: +0.1 points, inside the spread: a tie."""
    cases, regions = ("c1", "c2"), REGION_NAMES
    base = [_table({(c, r): v for c in cases for r in regions}) for v in (0.5, 0.6)]
    a = [_table({("c1", r): 0.9 for r in regions} | {("c2", r): v for r in regions}) for v in (0.7, 0.9)]
    b = [t.assign(dice=t.dice + 0.001 * np.array([1, 2] * 3)) for t in base]  # +0.1 and +0.2 points
    from mmkd_helpers.evaluation import compare_seeds, describe_comparison

    table = compare_seeds({"baseline": base, "A": a, "B": b}, "baseline").set_index(["method", "region"])
    row = table.loc[("A", "ET")]
    assert row["mean"] == pytest.approx(85) and row["reference"] == pytest.approx(55)
    assert row["sd"] == pytest.approx(np.sqrt(50)) and row["spread"] == pytest.approx(np.sqrt(50))
    assert row["difference"] == pytest.approx(30) and row["p"] == pytest.approx(1 - 2 * np.arctan(6) / np.pi)
    assert row["verdict"] == "tie" and table.loc[("B", "mean"), "verdict"] == "tie"
    assert "a tie (p ≥ 0.05)" in describe_comparison(row.to_dict() | {"method": "A", "region": "ET"}, "baseline")
    # with three cases the same +30 points is significant: better
    a3 = [pd.concat([t, _table({("c3", r): 0.85 for r in regions})]) for t in a]
    base3 = [pd.concat([t, _table({("c3", r): 0.55 for r in regions})]) for t in base]
    assert compare_seeds({"base": base3, "A": a3}, "base").set_index("region").loc["ET", "verdict"] == "better"
    with pytest.raises(ValueError, match="reference"):
        compare_seeds({"A": a}, "baseline")


def test_holm_by_hand():
    """Holm (1979): sorted p 0.005, 0.01, 0.03, 0.04 (m = 4) are multiplied by 4, 3, 2, 1 -> 0.02, 0.03, 0.06,
    0.04, then made non-decreasing -> 0.02, 0.03, 0.06, 0.06; returned in the input order."""
    from mmkd_helpers.evaluation import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; a NaN stays NaN and does not count (m = 2: 0.02 x 2, 0.6 x 1 -> 0.6)
    adjusted = holm([0.02, float("nan"), 0.6])
    assert adjusted[0] == pytest.approx(0.04) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6]) and holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([0.5]) == pytest.approx([0.5]) and len(holm([])) == 0
    # ties keep their order, each with its own factor, then the running maximum: 0.01 x 3, 0.01 x 2 -> 0.03, 0.03
    assert holm([0.01, 0.01, 0.2]) == pytest.approx([0.03, 0.03, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def test_holm_verdicts_judge_on_the_adjusted_p():
    """Three rows of one family: p 0.01, 0.02, 0.04 -> Holm 0.03, 0.04, 0.04. Row 1 (+5 points, spread 1): better;
    row 2 (-5, spread 1): worse; row 3 (+0.5, spread 1): inside the spread, a tie. With a fourth row of p 0.5 the
    family has m = 4: 0.04, 0.06, 0.08, 0.5 -> only row 1 stays beyond chance."""
    from mmkd_helpers.evaluation import holm_verdicts

    rows = pd.DataFrame({"method": ["A", "B", "C"], "difference": [5.0, -5.0, 0.5], "spread": [1.0, 1.0, 1.0],
                         "p": [0.01, 0.02, 0.04], "verdict": ["better", "worse", "tie"]})
    judged = holm_verdicts(rows)
    assert judged["p_holm"].tolist() == pytest.approx([0.03, 0.04, 0.04])
    assert judged["verdict"].tolist() == ["better", "worse", "tie"] and judged["p"].tolist() == [0.01, 0.02, 0.04]
    four = holm_verdicts(pd.concat([rows, rows.iloc[:1].assign(method="D", p=0.5)]))
    assert four["p_holm"].tolist() == pytest.approx([0.04, 0.06, 0.08, 0.5])
    assert four["verdict"].tolist() == ["better", "tie", "tie", "tie"]


def test_cell_comparisons_and_methods_table_by_hand():
    """Three cases, combination T1 only. Baseline: seeds at 0.5 and 0.6 everywhere (mean 55.0, SD 7.1; per case
    0.55). Method A: 0.9, 0.85, 0.95 on the three cases, both seeds (90.0, SD 0): +35 points, spread 7.1; per-case
    differences 0.35, 0.30, 0.40 (mean 0.35, SD 0.05): t = 0.35 / (0.05 / √3) = 12.12 with 2 df, two-sided
    p = 1 - t / √(t² + 2) = 0.0068. One seed: 0.55, 0.56, 0.57 (differences 0, 0.01, 0.02: t = √3, p = 0.225).
    Holm over the 6 rows (2 methods x ET/TC/WT): A's three p x 6, 5, 4, made non-decreasing -> 0.041 < 0.05:
    better. Its cell reads "90.0 ± 0.0▲", the baseline's "55.0 ± 7.1"; the one-seed method shows no SD."""
    from mmkd_helpers.evaluation import cell_comparisons, holm_verdicts, methods_table

    cases = ("c1", "c2", "c3")
    base = [_table({(c, r): v for c in cases for r in REGION_NAMES}) for v in (0.5, 0.6)]
    a = [_table({(c, r): v for c, v in zip(cases, (0.9, 0.85, 0.95)) for r in REGION_NAMES}) for _ in range(2)]
    one = [_table({(c, r): 0.55 + 0.01 * i for i, c in enumerate(cases) for r in REGION_NAMES})]
    cells = cell_comparisons({"baseline": base, "A": a, "one seed": one}, "baseline")
    assert set(cells.combination) == {"T1"} and set(cells.reference_method) == {"baseline"}
    judged = holm_verdicts(cells[cells.region != "mean"])
    row = judged.set_index(["method", "region"]).loc[("A", "ET")]
    assert row["mean"] == pytest.approx(90) and row["difference"] == pytest.approx(35)
    t = 0.35 / (0.05 / np.sqrt(3))
    assert row["p"] == pytest.approx(1 - t / np.sqrt(t**2 + 2)) and row["p_holm"] == pytest.approx(6 * row["p"])
    assert row["verdict"] == "better"
    assert judged.set_index(["method", "region"]).loc[("one seed", "ET"), "p"] == pytest.approx(0.2254, abs=1e-4)
    table = methods_table(judged, references={"baseline": "baseline (ref.)"})
    assert list(table.index) == ["T1"] and table.loc["T1", ("", "T1")] == "●"
    assert table.loc["T1", ("ET", "baseline (ref.)")] == "55.0 ± 7.1"
    assert table.loc["T1", ("ET", "A")] == "90.0 ± 0.0▲"
    # one seed: 56.0 on average (0.55, 0.56, 0.57), +1 point inside the spread: no mark, no SD
    assert table.loc["T1", ("WT", "one seed")] == "56.0"
    assert [c for c in table.columns if c[0] == "TC"] == [("TC", "baseline (ref.)"), ("TC", "A"), ("TC", "one seed")]
    # a summary row under its own label comes after the combinations; a method missing on a row is empty
    summary = judged[judged.method == "A"].assign(combination="Average")
    both = methods_table(pd.concat([summary, judged[judged.method == "one seed"]]))
    assert list(both.index) == ["T1", "Average"] and both.loc["Average", ("ET", "one seed")] == ""
    assert both.loc["Average", ("", "FLAIR")] == ""
