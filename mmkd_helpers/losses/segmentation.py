"""Segmentation (task) losses, from MONAI and torch rather than written by hand."""

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss

from ..constants import CLASS_LABELS, REGIONS


def region_masks(label, axis: int = 0):
    """BraTS label map -> boolean masks of the regions ET, TC, WT (:data:`~mmkd_helpers.constants.REGIONS`),
    stacked along ``axis``: a tensor for a tensor (training targets), an array for anything else (evaluation)."""
    if isinstance(label, torch.Tensor):
        return torch.stack([torch.isin(label, torch.tensor(v, device=label.device)) for v in REGIONS.values()], dim=axis)
    label = np.asarray(label)
    return np.stack([np.isin(label, values) for values in REGIONS.values()], axis=axis)


def region_targets(label: torch.Tensor) -> torch.Tensor:
    """BraTS label map (N, *spatial) -> float region maps (N, 3, *spatial) in the order ET, TC, WT."""
    return region_masks(label, axis=1).float()


def class_targets(label: torch.Tensor) -> torch.Tensor:
    """BraTS label map (N, *spatial) -> class indices (N, 1, *spatial), label 4 -> class 3."""
    lookup = torch.zeros(max(CLASS_LABELS) + 1, dtype=torch.long, device=label.device)
    lookup[list(CLASS_LABELS)] = torch.arange(len(CLASS_LABELS), device=label.device)
    return lookup[label.long()].unsqueeze(1)


SEG_LOSS_FORMS = ("dice_ce", "protokd_code")


def protokd_code_loss():
    """The segmentation loss of the ProtoKD code (Eq. 5's L_seg as released; the paper says only "CE + Dice"):
    a class-weighted cross-entropy whose weights are recomputed on every batch as w_c = 1 − n_c / N (n_c voxels
    of class c among the batch's N; ``torch.nn.functional.cross_entropy`` divides by the summed weights of the
    targets), plus a soft Dice over the **whole batch**, background included, with **squared** terms in the
    denominator, 1 − (2 Σ p y + 1e-5) / (Σ y² + Σ p² + 1e-5), averaged over the 4 classes (MONAI ``DiceLoss``
    with ``batch=True, squared_pred=True``). A batch holding one class only (a crop of healthy brain) gives that
    class the weight 0 and the code a 0/0 = NaN cross-entropy; here it falls back to the unweighted one.
    Returns ``loss(logits, label)`` taking the BraTS label map.
    """

    dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=True, squared_pred=True, batch=True,
                    smooth_nr=1e-5, smooth_dr=1e-5)

    def loss(logits, label):
        target = class_targets(label)
        counts = torch.bincount(target.flatten(), minlength=logits.shape[1]).to(logits.dtype)
        weight = 1 - counts / target.numel()
        if (counts > 0).sum() == 1:  # one class only: its weight is 0 and the code's weighted mean is 0/0 (NaN)
            weight = None
        return torch.nn.functional.cross_entropy(logits, target[:, 0], weight=weight) + dice(logits, target)

    return loss


def segmentation_loss(head: str = "regions", form: str = "dice_ce"):
    """Dice + cross-entropy, from MONAI.

    ``regions``: soft Dice (MONAI ``DiceLoss``) + binary cross-entropy (torch) on the 3 overlapping sigmoid
    channels ET/TC/WT, the LCKD/MetaKD task loss (the segmentation term of LCKD Eq. 7). Not MONAI's
    ``DiceCELoss``: for more than one channel it applies a softmax cross-entropy even with ``sigmoid=True``,
    which is wrong for overlapping regions. The BCE is averaged over channels where the official code sums it,
    so it weighs 1/3 of the code's. ``classes``: soft Dice (per sample, plain denominator) + cross-entropy on
    the 4-class softmax (RFNet, and the course's ProtoKD networks: the "CE + Dice" of ProtoKD Eq. 5);
    ``form="protokd_code"`` is the ProtoKD code's variant instead (:func:`protokd_code_loss`). Returns
    ``loss(logits, label)`` taking the BraTS label map.
    """

    if form not in SEG_LOSS_FORMS:
        raise ValueError(f"unknown segmentation loss form {form!r}; choose from {SEG_LOSS_FORMS}")
    if form == "protokd_code":
        if head != "classes":
            raise ValueError("the ProtoKD code's segmentation loss is for the 4-class head (head='classes')")
        return protokd_code_loss()
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
