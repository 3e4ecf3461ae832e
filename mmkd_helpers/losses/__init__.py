"""Loss functions: one home per equation, one module per paper. Methods combine them; notebooks import them.

* :mod:`.segmentation` -- the task losses (Dice + BCE on regions, Dice + CE on classes).
* :mod:`.lckd` -- LCKD (Wang et al., MICCAI 2023) Eq. 4, the cross-modal KD loss.
* :mod:`.metakd` -- MetaKD (Wang et al., arXiv 2405.07155) Eq. 4-6, the IWV and the modality-weighted KD loss.
"""

from .lckd import cross_modal_kd_loss
from .metakd import normalise_iwv, weighted_kd_loss
from .segmentation import class_targets, region_targets, segmentation_loss

__all__ = ["cross_modal_kd_loss", "class_targets", "region_targets", "segmentation_loss", "normalise_iwv",
           "weighted_kd_loss"]
