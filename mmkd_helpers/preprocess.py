"""Preprocessing: brain crop, optional resampling, per-modality z-score; cached as ``.npy`` with a manifest.

The order matters and follows RFNet/mmFormer: crop to the bounding box of the brain (any modality non-zero),
resample (images linearly, labels by nearest neighbour) when a coarser spacing is asked for, then z-score
each modality over the brain voxels and set the background to exactly 0 (the LCKD/MetaKD convention, so a
zeroed missing modality looks like empty space rather than like a dark brain).

Real BraTS cases hold raw scanner values (int16, some up to 32767, scales differ per case), so the z-score
is what makes one case comparable with another.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Case, CaseRef, DataError, read_case
from .fileio import atomic_path, atomic_write_text, file_lock


CACHE_FORMAT = 1  # bump when the cached arrays change meaning


@dataclass(frozen=True)
class PreprocessConfig:
    spacing: float | None = None  # resample finer grids to this isotropic spacing (mm); None keeps every grid
    margin: int = 2  # voxels kept around the brain bounding box

    def key(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Voxels where any modality is non-zero (BraTS images are skull-stripped, background 0)."""
    return (images != 0).any(axis=0)


def brain_bbox(mask: np.ndarray, margin: int = 0) -> tuple:
    """Slices of the bounding box of ``mask``, widened by ``margin`` and clipped to the volume."""
    if not mask.any():
        raise ValueError("empty brain mask: every modality is zero")
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, mask.shape[axis])))
    return tuple(slices)


def resample(images: np.ndarray, label, spacing: tuple, target: float):
    """Resample to isotropic ``target`` mm: trilinear for images, nearest neighbour for labels."""

    size = [max(1, int(round(n * s / target))) for n, s in zip(images.shape[1:], spacing)]
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(images))[None], size=size, mode="trilinear",
                        align_corners=False)[0].numpy()
    if label is not None:
        label = F.interpolate(torch.from_numpy(label)[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        label = label.numpy().astype(np.uint8)
    return out, label


def zscore(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-modality z-score over ``mask`` voxels; voxels outside the mask become 0."""
    out = np.zeros_like(images, dtype=np.float32)
    for c, channel in enumerate(images):
        values = channel[mask]
        std = values.std()
        out[c][mask] = (values - values.mean()) / (std if std > 0 else 1.0)
    return out


def preprocess_case(case: Case, config: PreprocessConfig = PreprocessConfig()):
    """(images float32 (4, X, Y, Z), label uint8 or None) ready for training."""
    box = brain_bbox(brain_mask(case.images), config.margin)
    images = case.images[(slice(None),) + box]
    label = None if case.label is None else case.label[box]
    mask = brain_mask(images)
    if config.spacing is not None and min(case.spacing) < config.spacing - 1e-3:  # only ever coarser
        images, label = resample(images, label, case.spacing, config.spacing)
        mask = brain_mask(images)
    return zscore(images, mask), label


def _source_stamp(ref: CaseRef) -> list:
    """(path, size, mtime) of every source file: a change in any of them invalidates the cached case."""
    stamp = []
    for path in list(ref.image_paths) + ([ref.label_path] if ref.label_path else []):
        if not Path(path).exists():
            raise DataError(f"{path}: file missing")
        info = Path(path).stat()
        stamp.append([str(Path(path).resolve()), info.st_size, info.st_mtime_ns])
    return stamp


def cache_cases(refs: list, cache_dir, config: PreprocessConfig = PreprocessConfig(), progress: bool = True) -> list:
    """Preprocess ``refs`` into ``cache_dir/<config key>/`` and return one dict per case.

    Each dict has ``case_id``, ``image`` and ``label`` (paths of ``.npy`` files; label None if unlabelled)
    and ``shape``. A case is recomputed when its source files (path, size, mtime) or the preprocessing
    parameters change; every file and the manifest are written atomically, so an interrupted run leaves
    a consistent cache. Processes filling the same cache at once take turns.
    """

    root = Path(cache_dir) / config.key()
    manifest_path = root / "manifest.json"
    # Two processes (two notebooks) may fill the same cache: the second waits, then reads the manifest the first
    # wrote, so that neither rebuilds the other's cases nor drops them from the manifest.
    with file_lock(root.with_name(root.name + ".lock"),
                   waiting=f"{root}: another process is preprocessing into this cache; waiting for it to finish"):
        manifest = {"config": asdict(config), "format": CACHE_FORMAT, "cases": _read_cases(manifest_path)}
        entries = []
        for ref in tqdm(refs, desc="preprocess", disable=not progress, leave=False):
            stamp = _source_stamp(ref)
            entry = manifest["cases"].get(ref.case_id)
            if not _entry_valid(entry, stamp, root):
                images, label = preprocess_case(read_case(ref), config)
                entry = {"sources": stamp, "image": f"{ref.case_id}_image.npy",
                         "label": f"{ref.case_id}_label.npy" if label is not None else None,
                         "shape": list(images.shape[1:])}
                _save_npy(root / entry["image"], images)
                if label is not None:
                    _save_npy(root / entry["label"], label)
                manifest["cases"][ref.case_id] = entry
                atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
            entries.append({"case_id": ref.case_id, "image": root / entry["image"],
                            "label": root / entry["label"] if entry["label"] else None,
                            "shape": tuple(entry["shape"])})
    return entries


def _read_cases(manifest_path: Path) -> dict:
    """The ``cases`` of a cache manifest; ``{}`` when it is missing or corrupt (that only costs a rebuild)."""
    try:
        return dict(json.loads(manifest_path.read_text())["cases"])
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return {}


def _entry_valid(entry, stamp: list, root: Path) -> bool:
    """Whether a manifest entry describes these source files and its arrays are on disk."""
    try:
        files = [entry["image"]] + ([entry["label"]] if entry["label"] else [])
        return entry["sources"] == stamp and all((root / f).exists() for f in files) and len(entry["shape"]) > 0
    except (TypeError, KeyError):
        return False


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def load_cached(entry: dict, mmap: bool = True):
    """(images, label) arrays of a cache entry; memory-mapped by default so large sets need not fit in RAM."""
    mode = "r" if mmap else None
    images = np.load(entry["image"], mmap_mode=mode)
    label = np.load(entry["label"], mmap_mode=mode) if entry["label"] else None
    return images, label
