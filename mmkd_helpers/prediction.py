"""Segment a patient: a trained checkpoint, one case folder with whichever modalities were acquired, a BraTS label
map written as NIfTI in the case's own grid (it opens over the images in ITK-SNAP or 3D Slicer, and is what the
BraTS evaluation takes).

The volume goes to the network as it does in training and evaluation (:func:`~mmkd_helpers.preprocess.preprocess_case`
with the run's ``spacing``: brain crop with margin, resampling only to a coarser grid, z-score), through sliding
windows of the training crop (:func:`~mmkd_helpers.evaluation.predict_logits`). The way back:

* where the case was resampled, the *logits* are resampled to the cropped original grid (trilinear, the geometry of
  :func:`~mmkd_helpers.preprocess.resample` inverted) and thresholded there, so that boundaries fall between the
  coarse voxels instead of in their staircase (nnU-Net resamples its probabilities back for the same reason);
* the label map is rebuilt as in evaluation (:func:`~mmkd_helpers.evaluation.logits_to_label`) and padded into the
  original shape with 0 (background) outside the brain crop;
* the NIfTI header is the case's own (affine, qform and sform with their codes, units), with data type uint8.

Without resampling the written map is, voxel for voxel, the one :func:`~mmkd_helpers.evaluation.evaluate` scores for
the same combination, with the background around the crop.
"""

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch.nn.functional as F
from tqdm.auto import tqdm

from .constants import MODALITIES, combination_name
from .course import CourseConfig
from .data import CaseRef, DataError, available_modalities, find_cases, read_available
from .evaluation import logits_to_label, model_combinations, predict_logits
from .fileio import atomic_path
from .models import load_trained_model
from .preprocess import PreprocessConfig, brain_bbox, brain_mask, preprocess_case
from .training import resolve_device

OUTPUT_SUFFIXES = (".nii.gz", ".nii")


def _requested(modalities) -> tuple | None:
    """Present-mask of the ``modalities`` option (names of :data:`~mmkd_helpers.constants.MODALITIES`), or None."""
    if modalities is None:
        return None
    names = [str(m).lower() for m in ([modalities] if isinstance(modalities, str) else modalities)]
    unknown = [m for m in names if m not in MODALITIES]
    if not names or unknown:
        raise ValueError(f"modalities must be a non-empty subset of {', '.join(MODALITIES)}, got {modalities!r}")
    return tuple(m in names for m in MODALITIES)


def _names(present) -> str:
    return ", ".join(m for m, keep in zip(MODALITIES, present) if keep)


def _combination(ref: CaseRef, requested, model_config) -> tuple:
    """The present-mask the case is segmented with, or the error that says why it cannot be."""
    available = available_modalities(ref)
    if requested is not None:
        lacking = [m for m, want, have in zip(MODALITIES, requested, available) if want and not have]
        if lacking:
            raise DataError(f"{Path(ref.image_paths[0]).parent}: case {ref.case_id} has no {', '.join(lacking)} "
                            f"image (asked for by modalities)")
    use = requested or available
    if not any(use):
        raise DataError(f"{Path(ref.image_paths[0]).parent}: case {ref.case_id} has none of the modality files "
                        f"{', '.join(MODALITIES)}")
    if model_config.fusion == "shared":
        return use
    (needed,) = model_combinations(model_config)  # an early-fusion network takes its input modalities, no others
    if any(need and not have for need, have in zip(needed, use)):
        raise ValueError(f"case {ref.case_id}: the model is an early-fusion network of {_names(needed)} and needs "
                         f"every one of them; the case gives {_names(use)}")
    return needed


def _case_ref(case) -> CaseRef:
    if isinstance(case, CaseRef):
        return case
    folder = Path(case)
    refs = find_cases(folder)
    if not _is_case_folder(folder, refs):
        raise DataError(f"{folder}: not one case folder ({folder.name}/{folder.name}_flair.nii.gz ...) but a folder of "
                        f"{len(refs)} cases; predict_path segments each of them")
    return refs[0]


def _is_case_folder(folder: Path, refs) -> bool:
    return len(refs) == 1 and refs[0].layout == "brats" and Path(refs[0].image_paths[0]).parent == folder


def _header_source(ref: CaseRef, present) -> nib.Nifti1Image:
    """The image whose header the prediction takes: the first modality file read (the MSD 4D image)."""
    (path,) = ref.image_paths if ref.layout == "msd" else [ref.image_paths[present.index(True)]]
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken headers
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None


def grid_spacing(ref: CaseRef, config) -> tuple:
    """Voxel size (mm per axis) of the grid the network sees for case ``ref``, from a header: the case's own, or
    ``config.spacing`` (isotropic, nominal: the resampled size is rounded to whole voxels) where that is coarser, the
    rule of :func:`~mmkd_helpers.preprocess.preprocess_case`. What :func:`~mmkd_helpers.evaluation.evaluate` needs
    to give HD95 in mm: ``spacing={ref.case_id: grid_spacing(ref, config) for ref in refs}``."""
    present = available_modalities(ref)
    if not any(present):
        raise DataError(f"{Path(ref.image_paths[0]).parent}: case {ref.case_id} has no modality file")
    spacing = tuple(float(s) for s in np.linalg.norm(_header_source(ref, present).affine[:3, :3], axis=0))
    if config.spacing is not None and min(spacing) < config.spacing - 1e-3:
        return (float(config.spacing),) * 3
    return spacing


def predict_case(model, config, case, modalities=None, device=None) -> tuple:
    """(label map as a NIfTI image in the case's grid, info dict) of one case.

    ``case``: a BraTS case folder (``<case>/<case>_<modality>.nii[.gz]``, any non-empty subset of the modality files)
    or a :class:`~mmkd_helpers.data.CaseRef` (MSD cases: all four modalities). ``config``: the run's
    :class:`~mmkd_helpers.course.CourseConfig` (``roi_size``, ``spacing``, ``eval_overlap``). ``modalities``: names
    to restrict to (the case must have them), default every modality the case has. An early-fusion network is given
    its input modalities and refuses a case that lacks one (ValueError). ``device``: where to run; the model is moved
    there (default: where it is).

    The info dict: ``case_id``, ``modalities`` (used) and ``available`` (names), ``combination`` (e.g.
    "FLAIR+T2"), ``crop`` (``[start, stop)`` per axis of the brain crop in the original grid), ``grid_shape`` and
    ``grid_spacing`` (mm) of the network's grid, ``resampled``, ``voxels`` (count per label).
    """

    ref = _case_ref(case)
    present = _combination(ref, _requested(modalities), model.config)
    if device is not None:
        model = model.to(device)
    source, _ = read_available(replace(ref, label_path=None), keep=present)  # a patient has no label map
    preprocess = PreprocessConfig(spacing=config.spacing)  # as load_data caches the volumes evaluate scores
    box = brain_bbox(brain_mask(source.images), preprocess.margin)
    images, _ = preprocess_case(source, preprocess)
    logits = predict_logits(model, images, present, config.roi_size, config.eval_overlap, device=device)
    crop_shape = tuple(s.stop - s.start for s in box)
    resampled = tuple(images.shape[1:]) != crop_shape
    if resampled:
        logits = F.interpolate(logits[None], size=crop_shape, mode="trilinear", align_corners=False)[0]
    label = np.zeros(source.images.shape[1:], dtype=np.uint8)
    label[box] = logits_to_label(logits, model.config.head)

    header_image = _header_source(ref, present)
    image = nib.Nifti1Image(label, header_image.affine, header_image.header)  # the header keeps the q/sform codes
    image.set_data_dtype(np.uint8)
    image.header.set_intent("label")
    image.header["cal_min"], image.header["cal_max"] = 0, max(0, int(label.max()))  # the source's were intensities
    values, counts = np.unique(label, return_counts=True)
    info = {"case_id": ref.case_id, "modalities": tuple(m for m, keep in zip(MODALITIES, present) if keep),
            "available": tuple(m for m, have in zip(MODALITIES, available_modalities(ref)) if have),
            "combination": combination_name(present), "crop": [[int(s.start), int(s.stop)] for s in box],
            "grid_shape": tuple(images.shape[1:]),
            "grid_spacing": tuple(float(n * s / g) for n, s, g in zip(crop_shape, source.spacing, images.shape[1:])),
            "resampled": resampled, "voxels": {int(v): int(c) for v, c in zip(values, counts)}}
    return image, info


def predict_path(checkpoint, path, out, modalities=None, device="auto", progress=False) -> list:
    """Segment a case folder, or every case of a folder of cases, with a training checkpoint; returns the files.

    ``path``: one BraTS case folder (then ``out`` is the output file, ``.nii.gz`` or ``.nii``) or a folder of cases in
    the BraTS or MSD layout (then ``out`` is a folder and each case is written to ``out/<case_id>.nii.gz``).
    ``modalities``: as for :func:`predict_case`. Every case is checked (modalities present, the model able to take
    them) before the first is segmented; each file is written atomically.
    """
    model, saved = load_trained_model(checkpoint, resolve_device(device))
    if "course" not in saved:
        raise ValueError(f"{checkpoint}: records no course configuration (crop, spacing), so its input cannot be "
                         f"prepared as in training")
    config = CourseConfig.from_dict(saved["course"])
    path, out = Path(path), Path(out)
    refs = find_cases(path)
    if _is_case_folder(path, refs):
        if not out.name.endswith(OUTPUT_SUFFIXES) or out.is_dir():
            raise ValueError(f"{out}: the output of one case is a NIfTI file, ending in {' or '.join(OUTPUT_SUFFIXES)}")
        targets = [out]
    else:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: is a file; the predictions of a folder of cases go to a folder")
        targets = [out / f"{ref.case_id}.nii.gz" for ref in refs]
    requested = _requested(modalities)
    for ref in refs:
        _combination(ref, requested, model.config)
    for ref, target in tqdm(list(zip(refs, targets)), desc="predict", disable=not progress, leave=False):
        image, _ = predict_case(model, config, ref, modalities)
        with atomic_path(target) as tmp:
            nib.save(image, str(tmp))
    return targets
