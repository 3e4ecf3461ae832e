"""Training patches: random crops, flips, intensity augmentation and random modality dropping.

Sample ``i`` is drawn from a generator seeded with ``(seed, i)``: the data stream is a pure function of
the sample index. That makes a resumed run see exactly the batches the uninterrupted run would have seen,
with any number of DataLoader workers, and lets several GPUs split one stream by index.

Which modalities are present travels with every sample as a boolean mask; nothing downstream infers it
from zeros.
"""

import numpy as np
import torch

from .constants import COMBINATIONS, NUM_MODALITIES

DROP_POLICIES = {
    "none": "all four modalities, always",
    "uniform15": "one of the 15 non-empty subsets, uniformly (RFNet, mmFormer)",
    "keep1to3": "keep k ~ U{1,2,3} modalities, chosen uniformly: never all four (LCKD code)",
    "keep1to4": "keep k ~ U{1,2,3,4} modalities, chosen uniformly (MetaKD code)",
}


def sample_present(rng: np.random.Generator, policy: str = "uniform15") -> np.ndarray:
    """A boolean present-mask over (FLAIR, T1, T1ce, T2) drawn by ``policy`` (see :data:`DROP_POLICIES`)."""
    if policy == "none":
        return np.ones(NUM_MODALITIES, dtype=bool)
    if policy == "uniform15":
        return np.array(COMBINATIONS[rng.integers(len(COMBINATIONS))])
    if policy in ("keep1to3", "keep1to4"):
        keep = rng.integers(1, 4 if policy == "keep1to3" else 5)
        present = np.zeros(NUM_MODALITIES, dtype=bool)
        present[rng.choice(NUM_MODALITIES, size=keep, replace=False)] = True
        return present
    raise ValueError(f"unknown modality-drop policy {policy!r}; choose from {sorted(DROP_POLICIES)}")


def random_crop_start(rng, shape, roi, label=None, fg_prob: float = 0.0):
    """Start corner of a crop of size ``roi``; with probability ``fg_prob`` centred on a tumour voxel."""
    if label is not None and fg_prob > 0 and rng.random() < fg_prob:
        foreground = np.flatnonzero(np.asarray(label).ravel())
        if foreground.size:
            centre = np.unravel_index(foreground[rng.integers(foreground.size)], shape)
            return [int(np.clip(c - r // 2, 0, max(n - r, 0))) for c, r, n in zip(centre, roi, shape)]
    return [int(rng.integers(0, max(n - r, 0) + 1)) for r, n in zip(roi, shape)]


def crop_or_pad(array: np.ndarray, start, roi) -> np.ndarray:
    """Crop the last ``len(roi)`` axes at ``start``; zero-pad where the volume is smaller than ``roi``."""
    lead = array.ndim - len(roi)
    box = tuple(slice(s, s + r) for s, r in zip(start, roi))
    patch = np.asarray(array[(slice(None),) * lead + box])
    pad = [(0, 0)] * lead + [(0, r - n) for r, n in zip(roi, patch.shape[lead:])]
    return np.pad(patch, pad) if any(p[1] for p in pad) else patch


class PatchDataset(torch.utils.data.Dataset):
    """Random training patches from preprocessed volumes.

    ``volumes`` is a list of ``(images (4, X, Y, Z), label (X, Y, Z))`` arrays (memory-mapped is fine).
    Item ``i`` is a dict: ``image`` float32 (4, *roi), ``label`` int64 (*roi) with BraTS labels,
    ``present`` bool (4,), ``case`` int. Samples with index below ``full_modality_samples`` keep all
    four modalities (a full-modality warm-up).
    """

    def __init__(self, volumes, roi_size=(48, 48, 48), fg_prob: float = 0.5, flip: bool = True,
                 intensity: float = 0.1, drop_policy: str = "uniform15", seed: int = 0, length: int = 10**9,
                 full_modality_samples: int = 0):
        if not volumes:
            raise ValueError("PatchDataset needs at least one volume")
        if any(label is None for _, label in volumes):
            raise ValueError("training volumes need label maps")
        sample_present(np.random.default_rng(0), drop_policy)  # fail early on a bad policy name
        self.volumes = volumes
        self.roi_size = tuple(roi_size)
        self.fg_prob, self.flip, self.intensity = fg_prob, flip, intensity
        self.drop_policy, self.seed, self.length = drop_policy, seed, length
        # Samples with a smaller index keep all four modalities: the LCKD/MetaKD code's full-modality warm-up
        # (with the engine's index = (step * world + rank) * batch + k, that is the first steps of a run).
        self.full_modality_samples = full_modality_samples

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        case = int(rng.integers(len(self.volumes)))
        images, label = self.volumes[case]
        start = random_crop_start(rng, label.shape, self.roi_size, label, self.fg_prob)
        image = crop_or_pad(images, start, self.roi_size).astype(np.float32)
        target = crop_or_pad(label, start, self.roi_size).astype(np.int64)
        if self.flip:
            for axis in range(len(self.roi_size)):
                if rng.random() < 0.5:
                    image, target = np.flip(image, axis + 1), np.flip(target, axis)
        if self.intensity:
            # Per-modality scale and shift (RFNet); brain voxels only, so the background stays exactly 0.
            scale = rng.uniform(1 - self.intensity, 1 + self.intensity, size=(len(image),) + (1,) * len(self.roi_size))
            shift = rng.uniform(-self.intensity, self.intensity, size=scale.shape)
            image = np.where(image != 0, image * scale + shift, 0).astype(np.float32)
        present = sample_present(rng, "none" if index < self.full_modality_samples else self.drop_policy)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)),
                "label": torch.from_numpy(np.ascontiguousarray(target)),
                "present": torch.from_numpy(present), "case": case}
