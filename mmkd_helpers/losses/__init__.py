"""Loss functions: one home per equation, one module per paper. Methods combine them; notebooks import them.

* :mod:`.segmentation` -- the task losses (Dice + BCE on regions, Dice + CE on classes).
* :mod:`.lckd` -- LCKD (Wang et al., MICCAI 2023) Eq. 4, the cross-modal KD loss.
* :mod:`.metakd` -- MetaKD (Wang et al., arXiv 2405.07155) Eq. 4-6, the IWV and the modality-weighted KD loss.
* :mod:`.protokd` -- ProtoKD (Wang et al., ICASSP 2023) Eq. 1-4, pixel-wise KD, prototypes, I²FV maps.
* :mod:`.pmix` -- Mind the Gap (Liu et al., arXiv 2409.19366) Sec. III-B, alignment to the anchors
  P^N_mix, P^k_mix, P*_mix, and measures of the modality gap.
"""

from .lckd import cross_modal_kd_loss
from .metakd import normalise_iwv, weighted_kd_loss
from .pmix import pmix_mixture_loss, pmix_modality_loss, pmix_normal_loss
from .protokd import class_prototypes, pixel_kd_loss, prototype_kd_loss, similarity_maps
from .segmentation import class_targets, region_targets, segmentation_loss

__all__ = ["cross_modal_kd_loss", "class_targets", "region_targets", "segmentation_loss", "normalise_iwv",
           "weighted_kd_loss", "class_prototypes", "pixel_kd_loss", "prototype_kd_loss", "similarity_maps", "pmix_mixture_loss", "pmix_modality_loss", "pmix_normal_loss"]
