"""The one canonical modality order, label map, region definition and list of modality combinations.

Everything in the package speaks this convention; readers of other layouts convert at load time.

* Modality order (channel index): FLAIR, T1, T1ce, T2 -- the order of the LCKD/MetaKD code and of the
  BraTS file suffixes ``flair, t1, t1ce, t2``.
* Label map: BraTS 2018 -- 0 background, 1 necrotic / non-enhancing core (NCR/NET), 2 peritumoral
  edema (ED), 4 enhancing tumour (ET). The MSD Task01 map (1 edema, 2 non-enhancing, 3 enhancing) is
  converted with :data:`MSD_TO_BRATS`.
* Regions (the three tasks of the papers): ET = {4}, TC = {1, 4}, WT = {1, 2, 4}.
"""

MODALITIES = ("flair", "t1", "t1ce", "t2")
"""File suffixes of the BraTS layout, in canonical channel order."""

MODALITY_NAMES = ("FLAIR", "T1", "T1ce", "T2")
"""Display names, in canonical channel order."""

NUM_MODALITIES = len(MODALITIES)

LABELS = {0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"}
"""The BraTS 2018 label map used everywhere in the package."""

MSD_TO_BRATS = {0: 0, 1: 2, 2: 1, 3: 4}
"""Medical Segmentation Decathlon Task01 labels -> BraTS labels (edema 1->2, non-enhancing 2->1, ET 3->4)."""

MSD_CHANNEL_ORDER = ("flair", "t1", "t1ce", "t2")
"""Channel order of the MSD 4D images (FLAIR, T1w, T1gd, T2w): the same as ours, stated to be checked."""

REGIONS = {"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}
"""Tumour regions as sets of BraTS labels, in the order used for the 3 sigmoid output channels."""

REGION_NAMES = tuple(REGIONS)

CLASS_LABELS = (0, 1, 2, 4)
"""Class index -> BraTS label for the 4-class softmax head (class 3 is label 4)."""

COMBINATIONS = (
    (True, False, False, False),
    (False, True, False, False),
    (False, False, True, False),
    (False, False, False, True),
    (True, True, False, False),
    (True, False, True, False),
    (True, False, False, True),
    (False, True, True, False),
    (False, True, False, True),
    (False, False, True, True),
    (True, True, True, False),
    (True, True, False, True),
    (True, False, True, True),
    (False, True, True, True),
    (True, True, True, True),
)
"""The 15 non-empty modality subsets as present-masks over (FLAIR, T1, T1ce, T2), in the row order of
Table 1 of the LCKD paper (singles, pairs, triples, all four)."""


def combination_name(present) -> str:
    """``(True, False, True, False)`` -> ``"FLAIR+T1ce"``."""
    names = [name for name, keep in zip(MODALITY_NAMES, present) if keep]
    if not names:
        raise ValueError("a modality combination needs at least one present modality")
    return "+".join(names)


def combination_marks(present) -> str:
    """``(True, False, True, False)`` -> ``"● ○ ● ○"`` as in the papers' tables."""
    return " ".join("●" if keep else "○" for keep in present)
