"""Reading cases from disk into the canonical convention (see :mod:`mmkd_helpers.constants`).

Two layouts are understood:

* **BraTS 2018-2021**: one folder per case, ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]`` (the case
  folders may sit in sub-folders such as ``HGG/`` and ``LGG/``). Labels are already BraTS labels.
* **Medical Segmentation Decathlon Task01_BrainTumour**: ``dataset.json`` + ``imagesTr/<case>.nii.gz``
  (one 4D image, channels FLAIR, T1w, T1gd, T2w) + ``labelsTr/<case>.nii.gz`` with labels 1 edema,
  2 non-enhancing, 3 enhancing, converted here to BraTS labels 2, 1, 4.

Every problem raises :class:`DataError` with a message that names the file and says what is wrong.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from .constants import LABELS, MODALITIES, MSD_CHANNEL_ORDER, MSD_TO_BRATS


NIFTI_SUFFIXES = (".nii.gz", ".nii")
_MSD_MODALITY_ALIASES = {"flair": "flair", "t1": "t1", "t1w": "t1", "t1gd": "t1ce", "t1ce": "t1ce", "t1c": "t1ce",
                         "t2": "t2", "t2w": "t2"}


class DataError(ValueError):
    """Bad input data. The message names the file and what is wrong with it."""


@dataclass(frozen=True)
class CaseRef:
    """Where one case lives on disk; nothing is read until :func:`read_case`."""

    case_id: str
    layout: str  # "brats" or "msd"
    image_paths: tuple  # 4 files (BraTS, canonical order) or 1 4D file (MSD)
    label_path: Path | None


@dataclass
class Case:
    case_id: str
    images: np.ndarray  # float32, (4, X, Y, Z), canonical modality order, raw intensities
    label: np.ndarray | None  # uint8, (X, Y, Z), BraTS labels {0, 1, 2, 4}; None for unlabelled cases
    affine: np.ndarray  # 4x4 voxel -> world (mm)

    @property
    def spacing(self) -> tuple:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def find_cases(root) -> list:
    """List the cases under ``root`` (BraTS or MSD layout), sorted by case id."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    msd_json = root / "dataset.json"
    if not msd_json.exists():
        nested = sorted(root.glob("*/dataset.json"))
        msd_json = nested[0] if len(nested) == 1 else msd_json
    if msd_json.exists():
        return _find_msd_cases(msd_json)
    cases = [_brats_ref(folder) for folder in _brats_case_folders(root)]
    if not cases:
        raise DataError(f"{root}: no cases found: expected BraTS case folders <case>/<case>_flair.nii.gz ... "
                        "or an MSD folder with dataset.json")
    return sorted(cases, key=lambda ref: ref.case_id)


def _brats_case_folders(root: Path, max_depth: int = 3):
    """Folders named like their files (``X/X_flair.nii.gz``), up to ``max_depth`` levels down."""
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        names = {p.name for p in folder.iterdir() if not p.name.startswith("._")}
        if any(f"{folder.name}_{kind}{suffix}" in names for kind in MODALITIES + ("seg",) for suffix in NIFTI_SUFFIXES):
            yield folder
        elif depth < max_depth:
            stack.extend((folder / name, depth + 1) for name in names if (folder / name).is_dir())


def _nifti_path(folder: Path, stem: str) -> Path:
    for suffix in NIFTI_SUFFIXES:
        if (folder / (stem + suffix)).exists():
            return folder / (stem + suffix)
    return folder / (stem + ".nii.gz")  # does not exist: read_case reports it


def _brats_ref(folder: Path) -> CaseRef:
    images = tuple(_nifti_path(folder, f"{folder.name}_{m}") for m in MODALITIES)
    label = _nifti_path(folder, f"{folder.name}_seg")
    return CaseRef(folder.name, "brats", images, label if label.exists() else None)


def _find_msd_cases(dataset_json: Path) -> list:
    try:
        meta = json.loads(dataset_json.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{dataset_json}: not readable JSON ({exc})") from None
    channels = meta.get("modality", {})
    order = tuple(_MSD_MODALITY_ALIASES.get(str(channels.get(str(i), "")).lower()) for i in range(len(channels)))
    if order != MSD_CHANNEL_ORDER:
        raise DataError(f"{dataset_json}: channel order {channels} is not FLAIR, T1w, T1gd, T2w")
    root = dataset_json.parent
    refs = []
    for entry in meta.get("training", []):
        image = root / entry["image"]
        if image.name.startswith("._"):
            continue
        case_id = image.name.split(".nii")[0]
        refs.append(CaseRef(case_id, "msd", (image,), root / entry["label"]))
    if not refs:
        raise DataError(f"{dataset_json}: lists no training cases")
    return sorted(refs, key=lambda ref: ref.case_id)


def _load_nifti(path: Path):
    """(array, affine) of a NIfTI file, or a DataError that says why it cannot be read."""

    if not path.exists():
        raise DataError(f"{path}: file missing")
    try:
        image = nib.load(str(path))
        return np.asanyarray(image.dataobj), image.affine
    except Exception as exc:  # nibabel, gzip and zlib raise many types for broken files
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); truncated or corrupt file?") from None


def _check_image(array: np.ndarray, path: Path) -> np.ndarray:
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: contains NaN or infinite values")
    if array.min() == array.max():
        raise DataError(f"{path}: image is constant ({array.min():g} everywhere)")
    return array


def _check_label(array: np.ndarray, path: Path, mapping: dict | None = None) -> np.ndarray:
    values = np.unique(array)
    allowed = set(mapping) if mapping else set(LABELS)
    unknown = [v for v in values.tolist() if v not in allowed]
    if unknown:
        raise DataError(f"{path}: unknown label values {unknown} (expected a subset of {sorted(allowed)})")
    label = array.astype(np.uint8)
    if mapping:
        lookup = np.zeros(max(mapping) + 1, dtype=np.uint8)
        for src, dst in mapping.items():
            lookup[src] = dst
        label = lookup[label]
    return label


def _check_geometry(path: Path, shape, affine, ref_path: Path, ref_shape, ref_affine) -> None:
    if tuple(shape) != tuple(ref_shape):
        raise DataError(f"{path}: shape {tuple(shape)} differs from {ref_path.name} {tuple(ref_shape)}")
    if not np.allclose(affine, ref_affine, atol=1e-3):
        raise DataError(f"{path}: affine differs from {ref_path.name}")


def read_case(ref: CaseRef) -> Case:
    """Read and check one case; images in canonical order, labels in BraTS convention."""
    if ref.layout == "msd":
        (path,) = ref.image_paths
        data, affine = _load_nifti(path)
        if data.ndim != 4 or data.shape[-1] != len(MODALITIES):
            raise DataError(f"{path}: expected a 4D image with {len(MODALITIES)} channels, got shape {data.shape}")
        images = np.stack([_check_image(np.asarray(data[..., c]), path) for c in range(data.shape[-1])])
        mapping = MSD_TO_BRATS
    elif ref.layout == "brats":
        arrays = []
        for path in ref.image_paths:
            data, aff = _load_nifti(path)
            if data.ndim != 3:
                raise DataError(f"{path}: expected a 3D image, got shape {data.shape}")
            if arrays:
                _check_geometry(path, data.shape, aff, ref.image_paths[0], arrays[0].shape, affine)
            else:
                affine = aff
            arrays.append(_check_image(data, path))
        images = np.stack(arrays)
        mapping = None
    else:
        raise DataError(f"{ref.case_id}: unknown layout {ref.layout!r}")

    label = None
    if ref.label_path is not None:
        data, aff = _load_nifti(ref.label_path)
        _check_geometry(ref.label_path, data.shape, aff, ref.image_paths[0], images.shape[1:], affine)
        if not np.array_equal(data, np.round(data)):
            raise DataError(f"{ref.label_path}: label values are not integers")
        label = _check_label(np.asarray(data).astype(np.int64), ref.label_path, mapping)
    return Case(ref.case_id, images, label, np.asarray(affine, dtype=np.float64))


def available_modalities(ref: CaseRef) -> tuple:
    """Present-mask over (FLAIR, T1, T1ce, T2) of the modality files a case has: a BraTS folder may lack some (a
    patient scanned without T1ce); an MSD 4D image holds all four."""
    if ref.layout == "msd":
        return (True,) * len(MODALITIES)
    return tuple(Path(path).exists() for path in ref.image_paths)


def read_available(ref: CaseRef, keep=None) -> tuple:
    """(case, present-mask) of a case read with whichever modality files it has, each checked as by
    :func:`read_case`; a missing modality's channel is zeros, which is how the models are given a missing modality.
    ``keep`` (a present-mask) reads only those of the available modalities, as if the others had not been acquired."""
    wanted = (True,) * len(MODALITIES) if keep is None else tuple(bool(k) for k in keep)
    present = tuple(have and want for have, want in zip(available_modalities(ref), wanted))
    if not any(present):
        raise DataError(f"{Path(ref.image_paths[0]).parent}: case {ref.case_id} has none of the modality files "
                        f"{', '.join(m for m, want in zip(MODALITIES, wanted) if want)}")
    if ref.layout == "msd" or all(present):
        case = read_case(ref)
        case.images[~np.array(present)] = 0
        return case, present
    partial = read_case(replace(ref, image_paths=tuple(p for p, read in zip(ref.image_paths, present) if read)))
    images = np.zeros((len(MODALITIES), *partial.images.shape[1:]), dtype=np.float32)
    images[np.array(present)] = partial.images
    return Case(ref.case_id, images, partial.label, partial.affine), present
