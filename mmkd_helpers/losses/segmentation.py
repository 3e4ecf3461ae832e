"""Segmentation (task) losses, from MONAI and torch rather than written by hand."""

import torch

from ..constants import CLASS_LABELS, REGIONS


def region_targets(label: torch.Tensor) -> torch.Tensor:
    """BraTS label map (N, *spatial) -> float region maps (N, 3, *spatial) in the order ET, TC, WT."""
    return torch.stack([torch.isin(label, torch.tensor(v, device=label.device)) for v in REGIONS.values()],
                       dim=1).float()


def class_targets(label: torch.Tensor) -> torch.Tensor:
    """BraTS label map (N, *spatial) -> class indices (N, 1, *spatial), label 4 -> class 3."""
    lookup = torch.zeros(max(CLASS_LABELS) + 1, dtype=torch.long, device=label.device)
    lookup[list(CLASS_LABELS)] = torch.arange(len(CLASS_LABELS), device=label.device)
    return lookup[label.long()].unsqueeze(1)


def segmentation_loss(head: str = "regions"):
    """Dice + cross-entropy, from MONAI.

    ``regions``: soft Dice (MONAI ``DiceLoss``) + binary cross-entropy (torch) on the 3 overlapping sigmoid
    channels ET/TC/WT, the LCKD/MetaKD task loss. Not MONAI's ``DiceCELoss``: for more than one channel it
    applies a softmax cross-entropy even with ``sigmoid=True``, which is wrong for overlapping regions.
    The BCE is averaged over channels where the official code sums it (methods_spec §1.2), so it weighs
    1/3 of the code's. ``classes``: soft Dice + cross-entropy on the 4-class softmax (ProtoKD, RFNet).
    Returns ``loss(logits, label)`` taking the BraTS label map.
    """
    from monai.losses import DiceCELoss, DiceLoss

    if head == "regions":
        dice = DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5)
        bce = torch.nn.BCEWithLogitsLoss()

        def loss(logits, label):
            target = region_targets(label)
            return dice(logits, target) + bce(logits, target)

        return loss
    if head == "classes":
        dice_ce = DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=1e-5)
        return lambda logits, label: dice_ce(logits, class_targets(label))
    raise ValueError(f"unknown head {head!r}")
