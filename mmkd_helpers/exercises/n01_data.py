"""Checkers of notebook 01 (the data): region sizes, the MSD label convention, the modality-drop policies, and
the region masks written from scratch."""

import numpy as np

from ..constants import COMBINATIONS, MODALITY_NAMES, NUM_MODALITIES, REGIONS
from ..losses.segmentation import region_masks
from . import checker, is_close, is_option


def region_percentage(volumes, region: str) -> float:
    """Mean over the cases of the percentage of the brain (voxels where any modality is non-zero) that ``region``
    (ET, TC or WT) occupies; ``volumes``: case id -> (images (4, *spatial), label)."""
    percentages = []
    for images, label in volumes.values():
        brain = (np.asarray(images) != 0).any(axis=0)
        percentages.append(100.0 * np.isin(np.asarray(label), REGIONS[region]).sum() / brain.sum())
    return float(np.mean(percentages))


@checker("01.1", hint="per case: the region's voxels divided by the brain's voxels (any modality non-zero), in %; "
                      "then the mean over the cases (not the pooled voxels of all cases)")
def _(answer, volumes, region="ET"):
    return is_close(answer, region_percentage(volumes, region), rel=0.02, abs_=0.02)


_MSD_2 = "053069292411fbcb4c4fa28b04bccf645a051320421fe292c2678e094fbf109e"  # digest("01.2", <the right option>)


@checker("01.2", hint="look the MSD label up in constants.MSD_TO_BRATS, then find the regions of constants.REGIONS "
                      "whose label sets contain the BraTS label; answer with the option's letter")
def _(answer):
    return is_option("01.2", answer, _MSD_2)


def missing_probability(policy: str, modality: str = "T1ce") -> float:
    """Exact probability that ``modality`` is missing from a present-mask drawn by ``policy``
    (:data:`mmkd_helpers.dataset.DROP_POLICIES`), by enumerating the policy's distribution."""
    index = MODALITY_NAMES.index(modality)
    if policy == "none":
        return 0.0
    if policy == "uniform15":
        return sum(not p[index] for p in COMBINATIONS) / len(COMBINATIONS)
    if policy in ("keep1to3", "keep1to4"):
        largest = 3 if policy == "keep1to3" else 4  # k ~ U{1..largest} modalities kept, chosen uniformly
        return float(np.mean([1.0 - k / NUM_MODALITIES for k in range(1, largest + 1)]))
    raise ValueError(f"unknown modality-drop policy {policy!r}")


@checker("01.3", hint="draw many present-masks with sample_present(rng, policy) (a few thousand), count how often "
                      "the modality's entry is False, and give that fraction as a number between 0 and 1")
def _(answer, policy="keep1to4", modality="T1ce"):
    return is_close(answer, missing_probability(policy, modality), abs_=0.02)


@checker("01.4", hint="your function takes a BraTS label map and returns three boolean masks stacked on a new first "
                      "axis, in the order ET, TC, WT; each region is a set of labels (constants.REGIONS)")
def _(answer, label):
    if not callable(answer):
        return False, "set answer to your function (its name, without calling it)"
    rng = np.random.default_rng(0)
    toy = rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=(5, 6, 7))
    for example in (np.asarray(label), toy):
        expected = region_masks(example)
        got = np.asarray(answer(example))
        if got.shape != expected.shape:
            return False, f"your masks have shape {got.shape}; expected one mask per region stacked first"
        if not np.array_equal(got.astype(bool), expected):
            wrong = [r for r, g, e in zip(REGIONS, got.astype(bool), expected) if not np.array_equal(g, e)]
            return False, f"the masks of {', '.join(wrong)} differ from the package's; which labels make each region?"
    return True
