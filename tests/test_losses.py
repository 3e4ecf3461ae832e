import numpy as np
import pytest
import torch

from mmkd_helpers.losses import class_targets, region_targets, segmentation_loss


def test_region_targets_by_hand():
    label = torch.tensor([[0, 1, 2, 4]])
    regions = region_targets(label)  # ET, TC, WT
    assert regions[0, 0].tolist() == [0, 0, 0, 1]
    assert regions[0, 1].tolist() == [0, 1, 0, 1]
    assert regions[0, 2].tolist() == [0, 1, 1, 1]


def test_class_targets_map_label_4_to_class_3():
    assert class_targets(torch.tensor([[0, 1, 2, 4]])).flatten().tolist() == [0, 1, 2, 3]


def test_segmentation_loss_prefers_the_right_answer():
    label = torch.tensor([[[0, 1], [2, 4]]])
    good = (region_targets(label) * 2 - 1) * 10  # confident and right
    bad = -good
    regions = segmentation_loss("regions")
    assert regions(good, label) < 0.05 < 1.0 < regions(bad, label)
    classes = segmentation_loss("classes")
    logits = torch.nn.functional.one_hot(class_targets(label)[:, 0], 4).movedim(-1, 1).float() * 10
    assert classes(logits, label) < 0.05 < classes(-logits, label)


def test_dice_plus_cross_entropy_by_hand():
    """Two voxels, labels 0 and 4, all logits 0; smoothing 0 in the numerator, 1e-5 in the denominator.

    ``regions``, the task loss L_seg of LCKD Eq. 7: ET, TC and WT are all (0, 1) and every sigmoid is 1/2, so each
    channel's Dice loss is 1 − 2·(1/2) / (1 + 1 + 1e-5) and the BCE is ln 2 everywhere.
    ``classes``, L_seg of ProtoKD Eq. 5 ("CE + Dice"): every softmax is 1/4, the CE is ln 4; classes 0 and 3 have
    Σpy = 1/4, Σp = 1/2, Σy = 1: 1 − (1/2) / (3/2 + 1e-5); classes 1 and 2 have Σpy = Σy = 0: a Dice loss of 1.
    """
    import math

    label = torch.tensor([0, 4]).view(1, 2, 1, 1)
    eps = 1e-5
    regions = segmentation_loss("regions")(torch.zeros(1, 3, 2, 1, 1), label)
    assert regions.item() == pytest.approx(1 - 1 / (2 + eps) + math.log(2), rel=1e-6)
    classes = segmentation_loss("classes")(torch.zeros(1, 4, 2, 1, 1), label)
    assert classes.item() == pytest.approx(math.log(4) + (2 * (1 - 0.5 / (1.5 + eps)) + 2) / 4, rel=1e-6)


def test_protokd_code_segmentation_loss_by_hand():
    """Two voxels, labels 0 and 4 (classes 0 and 3), all logits 0 (softmax 1/4 everywhere).

    Weighted CE: w = 1 - n_c/N = (1/2, 1, 1, 1/2); every voxel's CE is ln 4, so the weighted mean is ln 4.
    Batch Dice with squared denominators, background included: classes 0 and 3 have Σpy = 1/4, Σy² = 1,
    Σp² = 2/16, so 1 - (1/2 + 1e-5) / (9/8 + 1e-5); classes 1 and 2 have Σpy = Σy² = 0: 1 - 1e-5 / (1/8 + 1e-5).
    """
    import math

    loss = segmentation_loss("classes", form="protokd_code")
    logits = torch.zeros(1, 4, 2, 1, 1)
    label = torch.tensor([0, 4]).view(1, 2, 1, 1)
    eps = 1e-5
    dice = (2 * (1 - (0.5 + eps) / (9 / 8 + eps)) + 2 * (1 - eps / (1 / 8 + eps))) / 4
    assert loss(logits, label).item() == pytest.approx(math.log(4) + dice, rel=1e-5)
    background = loss(logits, torch.zeros(1, 2, 1, 1, dtype=torch.long))  # one class: plain CE, not 0/0
    assert torch.isfinite(background) and background.item() == pytest.approx(
        math.log(4) + (1 - (1 + eps) / (2 + 1 / 8 + eps) + 3 * (1 - eps / (1 / 8 + eps))) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="4-class head"):
        segmentation_loss("regions", form="protokd_code")
    with pytest.raises(ValueError, match="unknown segmentation loss"):
        segmentation_loss("classes", form="nnunet")


def test_region_masks_one_rule_for_arrays_and_tensors():
    """ET = {4}, TC = {1, 4}, WT = {1, 2, 4}, by hand; the training targets and the evaluation masks share it."""
    from mmkd_helpers.losses.segmentation import region_masks, region_targets

    label = np.array([0, 1, 2, 4])
    expected = np.array([[0, 0, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1]], dtype=bool)
    assert np.array_equal(region_masks(label), expected)
    assert torch.equal(region_masks(torch.tensor(label)), torch.tensor(expected))
    assert torch.equal(region_targets(torch.tensor(label)[None]), torch.tensor(expected, dtype=torch.float32)[None])
