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
