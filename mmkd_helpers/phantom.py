"""BraTS-format phantoms: synthetic brain-tumour cases, so the course can run without any download.

Each case is the MNI152 brain (ICBM 2009a nonlinear symmetric: brain mask, grey and white matter at 1 mm,
shipped in ``reference/`` with its licence) under a random
affine + elastic warp, with one glioma-like tumour (sometimes a small second focus) made of nested
compartments -- edema (2) around a core, the core an enhancing rim (4) around a necrotic /
non-enhancing centre (1); about 1 case in 8 is low-grade-like, with no enhancement. Every voxel is a
mixture of tissues, and each tissue has a mean intensity per modality (the table below). A random
per-case jitter of that table, a texture inside the tumour, a smooth bias field, Rician noise and an
arbitrary scanner scale per modality then make the raw values look like real BraTS ones: skull-
stripped (exactly 0 outside the brain), int16, in the hundreds to thousands, so z-scoring per
modality is needed downstream.

Contrast table (relative mean intensity; white matter = 1 in every modality):

================  =====  ====  ====  ====  ==========================================================
tissue            FLAIR  T1    T1ce  T2    why (MR physics)
================  =====  ====  ====  ====  ==========================================================
csf               0.30   0.45  0.15  2.40  free water: long T1 (dark on T1), long T2 (bright on T2);
                                           FLAIR's inversion pulse nulls free water: dark there too
grey_matter       1.20   0.85  0.65  1.30  more water, less myelin than white matter: longer T1 and
                                           T2, so darker on T1, brighter on T2 and FLAIR
white_matter      1.00   1.00  1.00  1.00  myelin shortens T1 and T2: bright on T1, darker on T2/FLAIR
edema             1.75   0.92  0.75  1.95  extra water in the tissue: long T2, but not free, so not
                                           nulled: bright on FLAIR; on T1 about as dark as the
                                           average brain
necrotic_core     1.90   0.75  0.55  2.40  dead, watery tissue: very long T1 and T2, bright on FLAIR
                                           (proteinaceous fluid is not nulled); no blood flow, so no
                                           gadolinium: dark on T1ce
enhancing_tumour  1.85   0.90  1.35  2.05  leaky blood-brain barrier lets gadolinium in, which
                                           shortens T1: bright on T1ce only; cellular, edematous
                                           tumour: bright on T2/FLAIR like the edema around it
================  =====  ====  ====  ====  ==========================================================

T1ce differs from T1 beyond gadolinium: in BraTS it is mostly a 3D gradient-echo scan (MPRAGE-like),
more strongly T1-weighted than the 2D (often spin-echo) T1, so water-rich tissues are darker on it;
this is also why T1 is the least informative modality.

**Calibrated on real data.** The tumour sizes, the tumour rows of the table, the per-case jitter of the
table and the texture were set so that two statistics of :mod:`mmkd_helpers.calibration` -- each region's
volume fraction of the brain and each modality's voxel-wise AUC (region against the rest of the brain, and
ET / TC against the rest of the tumour) -- fall within one standard deviation of their values on ten real
BraTS 2018 cases (shipped as aggregate numbers; notebook 01 shows both side by side). Nothing else was tuned
on them, and nothing at all on a network's results.

Consequences, which are properties of the data and hard-coded nowhere else: against healthy brain, every
tumour compartment is brightest on FLAIR (then T2), and T1 is the weakest modality; *inside* the tumour,
T1ce is what tells the enhancing tumour from the edema around it, and T2 (the watery necrosis) the core.
Every modality carries some, noisy, information about every region, and the contrasts vary from case to
case as scanners do.
"""

import functools
import io
import lzma
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import map_coordinates
from scipy.special import expit

from .constants import MODALITIES, MODALITY_NAMES
from .fileio import atomic_path


PHANTOM_VERSION = "2"
"""Bumped whenever the output for a given seed changes."""

CONTRAST_TABLE: dict[str, tuple[float, float, float, float]] = {
    "csf": (0.30, 0.45, 0.15, 2.40),
    "grey_matter": (1.20, 0.85, 0.65, 1.30),
    "white_matter": (1.00, 1.00, 1.00, 1.00),
    "edema": (1.75, 0.92, 0.75, 1.95),
    "necrotic_core": (1.90, 0.75, 0.55, 2.40),
    "enhancing_tumour": (1.85, 0.90, 1.35, 2.05),
}
"""Tissue -> relative mean intensity in (FLAIR, T1, T1ce, T2); the reasons are in the module docstring."""

_NORMAL_TISSUES = ("csf", "grey_matter", "white_matter")
_TUMOUR_TISSUES = ("edema", "necrotic_core", "enhancing_tumour")
_TEMPLATES = ("t1", "gm", "wm")
_BRAIN_MARGIN = 1.1  # the default field of view leaves room for the random scaling and rotation
_LOW_GRADE_FRACTION = 0.12
_SECOND_TUMOUR_FRACTION = 0.15
_EDGE = 0.02  # partial-volume transition at compartment borders, as a fraction of the radius
# Calibrated on real BraTS statistics (module docstring; tests/test_phantom.py checks the result):
_TUMOUR_RADIUS_MM = (20.0, 44.0)  # mean radius of the whole tumour, uniform
_CORE_SCALE = (0.65, 0.95)  # core radii / whole-tumour radii, uniform
_NECROSIS_SCALE = (0.75, 0.97)  # necrosis radius / core radius, uniform
_TABLE_JITTER = 0.12  # per-case log-normal jitter of the contrast table (scanners and tumours differ)
_TEXTURE = 0.18  # relative amplitude of the intensity texture inside the tumour


@dataclass
class PhantomCase:
    """One synthetic case, laid out as a BraTS case is once loaded."""

    images: np.ndarray  # (4, X, Y, Z) int16, channel order FLAIR, T1, T1ce, T2
    label: np.ndarray  # (X, Y, Z) uint8 in {0, 1, 2, 4}
    affine: np.ndarray  # 4x4 float, RAS, diagonal = spacing


def contrast_table() -> pd.DataFrame:
    """:data:`CONTRAST_TABLE` as a DataFrame (tissues x modalities), for display in notebooks."""

    return pd.DataFrame.from_dict(CONTRAST_TABLE, orient="index", columns=list(MODALITY_NAMES))


TEMPLATES_FILE = Path(__file__).parent / "reference" / "mni152_2009a_sym_templates.npy.xz"
"""(3, 145, 181, 155) uint8: the brain mask, grey and white matter (0-255) of the MNI ICBM 2009a nonlinear
symmetric templates at 1 mm (the skull-stripped "converted" T1, GM and WM files that nilearn distributes),
cropped to the brain's bounding box, GM and WM zeroed outside the brain; licence in ``MNI152_LICENCE.txt``
beside it. 1.4 MB with xz, where the three NIfTI files take 5.1 MB."""


@functools.lru_cache(maxsize=1)
def _templates_1mm() -> np.ndarray:
    """(brain, GM, WM) float32 at 1 mm, cropped to the brain's bounding box (so its centre is the origin)."""

    maps = np.load(io.BytesIO(lzma.decompress(TEMPLATES_FILE.read_bytes())), allow_pickle=False)
    maps = np.stack([maps[0].astype(bool), maps[1] / 255.0, maps[2] / 255.0]).astype(np.float32)
    maps.setflags(write=False)
    return maps


@functools.lru_cache(maxsize=4)
def _templates_blocked(k: int) -> np.ndarray:
    """The templates averaged over k x k x k mm blocks: anti-aliasing before linear resampling to k-ish mm."""
    maps = _templates_1mm()
    if k == 1:
        return maps
    c, *shape = maps.shape
    n = [s // k for s in shape]
    crop = maps[:, : n[0] * k, : n[1] * k, : n[2] * k]
    blocked = crop.reshape(c, n[0], k, n[1], k, n[2], k).mean(axis=(2, 4, 6))
    blocked.setflags(write=False)
    return blocked


@functools.lru_cache(maxsize=8)
def _grid_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """(3, X, Y, Z) voxel-centre positions in mm, relative to the centre of the field of view."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    grid.setflags(write=False)
    return grid


@functools.lru_cache(maxsize=64)
def _basis(n: int, spacing: float, scale_mm: float) -> np.ndarray:
    """(n, m) Gaussian weights from control points every ``scale_mm`` to n voxels (separable smoothing)."""
    m = int(np.ceil(n * spacing / scale_mm)) + 3
    ctrl = (np.arange(m) - (m - 1) / 2) * scale_mm
    x = (np.arange(n) - (n - 1) / 2) * spacing
    return np.exp(-0.5 * ((x[:, None] - ctrl[None]) / scale_mm) ** 2).astype(np.float32)


def _smooth_noise(rng, shape, spacing, scale_mm: float, count: int = 1) -> np.ndarray:
    """(count, X, Y, Z) random fields of unit std varying over ~``scale_mm``.

    Interpolating a coarse random grid with separable Gaussian weights is a few matrix products:
    much faster than filtering a full-resolution noise volume.
    """
    bases = [_basis(n, s, scale_mm) for n, s in zip(shape, spacing)]
    coarse = rng.standard_normal((count,) + tuple(b.shape[1] for b in bases), dtype=np.float32)
    field = np.einsum("xa,yb,zc,nabc->nxyz", *bases, coarse, optimize=True)
    return field / field.std(axis=(1, 2, 3), keepdims=True)


def _rotation(rng, max_deg: float) -> np.ndarray:
    """A random 3x3 rotation by up to ``max_deg`` about each axis (any orientation if max_deg >= 180)."""
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _warped_anatomy(rng, shape, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain mask, GM and WM fractions of the template under a random warp: a new head for each case."""

    k = max(1, int(min(spacing)))
    maps = _templates_blocked(k)
    grid = _grid_mm(shape, spacing)
    matrix = _rotation(rng, 4.0) @ np.diag(rng.uniform(0.92, 1.08, 3))
    shift = rng.uniform(-4.0, 4.0, 3)
    elastic = 2.5 * _smooth_noise(rng, shape, spacing, 30.0, count=3)  # mm
    points = np.einsum("ij,jxyz->ixyz", matrix.astype(np.float32), grid) + elastic
    # template mm (origin at the brain centre) -> index into the k-mm blocks
    centre = (np.array(_templates_1mm().shape[1:]) - 1) / 2
    points += (shift + centre - (k - 1) / 2)[:, None, None, None].astype(np.float32)
    points /= k
    brain, gm, wm = (map_coordinates(m, points, order=1, mode="constant", cval=0.0) for m in maps)
    brain = brain > 0.5
    return brain, gm * brain, wm * brain


def _tumour_fields(rng, shape, spacing, wm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Implicit fields of one tumour: (whole, core, necrosis), each < 1 inside that compartment.

    Centred in white matter, supratentorial and off the midline, where gliomas mostly grow.
    """
    grid = _grid_mm(shape, spacing)
    radius = rng.uniform(*_TUMOUR_RADIUS_MM)
    where = (wm > 0.5) & (np.abs(grid[0]) > 0.8 * radius + 5.0) & (grid[2] > -10.0)
    if not where.any():
        where = wm > 0.1
    centre = grid.reshape(3, -1)[:, rng.choice(np.flatnonzero(where))]
    return _nested_blob(rng, shape, spacing, centre, radius)


def _nested_blob(rng, shape, spacing, centre, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (whole, core, necrosis) implicit fields of a tumour of mean radius ``radius`` mm around ``centre``.

    Each compartment is a random ellipsoid whose normalised radius is perturbed by smooth noise: lobulated,
    irregular blobs. Nesting is built in: the core needs whole < 0.9, so edema always surrounds it, and
    the necrosis needs core < 0.8, so an enhancing rim surrounds it (except in low-grade-like cases).
    """
    grid = _grid_mm(shape, spacing)
    noise = _smooth_noise(rng, shape, spacing, float(round(radius / 3.0)), count=3)  # rounded: _basis caches
    rotation = _rotation(rng, 180.0).astype(np.float32)  # core and edema elongated along the same axes

    def ellipsoid(centre, radii):
        local = np.einsum("ij,jxyz->ixyz", rotation, grid - centre[:, None, None, None].astype(np.float32))
        return np.sqrt(np.sum((local / radii[:, None, None, None].astype(np.float32)) ** 2, axis=0))

    radii = radius * rng.uniform(0.7, 1.3, 3)
    whole = ellipsoid(centre, radii) + 0.25 * noise[0]
    core_radius = ellipsoid(centre + rng.normal(0.0, 0.1 * radius, 3), radii * rng.uniform(*_CORE_SCALE))
    core = np.maximum(core_radius + 0.25 * noise[1], whole + 0.1)
    if rng.random() < _LOW_GRADE_FRACTION:
        return whole, core, core  # low-grade-like: no enhancement, the core is all NCR/NET
    necrosis = np.maximum(core_radius / rng.uniform(*_NECROSIS_SCALE) + 0.3 * noise[2], core + 0.2)
    return whole, core, necrosis


def _tumours(rng, shape, spacing, brain, wm, csf) -> tuple[np.ndarray, np.ndarray]:
    """BraTS label map and soft compartment fractions (edema, necrosis, enhancing) of one or two tumours."""

    fields = _tumour_fields(rng, shape, spacing, wm)
    if rng.random() < _SECOND_TUMOUR_FRACTION:  # a small second focus; the min of two fields is their union
        centre = _grid_mm(shape, spacing).reshape(3, -1)[:, rng.choice(np.flatnonzero(wm > 0.5))]
        second = _nested_blob(rng, shape, spacing, centre, rng.uniform(6.0, 12.0))
        fields = tuple(np.minimum(a, b) for a, b in zip(fields, second))
    # tumour displaces tissue but does not fill the ventricles and sulci; soft edges = partial volume
    gate = brain * (1.0 - csf)
    whole, core, necrosis = (expit((1.0 - f) / _EDGE) * gate for f in fields)
    label = np.zeros(brain.shape, np.uint8)
    label[whole > 0.5] = 2
    label[core > 0.5] = 4
    label[necrosis > 0.5] = 1
    return label, np.stack([whole - core, necrosis, core - necrosis])


def _render(rng, shape, spacing, normal: np.ndarray, tumour: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mix tissue contrasts and add what a scanner adds: texture, bias field, Rician noise, arbitrary units."""
    table = np.array([CONTRAST_TABLE[t] for t in _NORMAL_TISSUES + _TUMOUR_TISSUES], np.float32)
    table *= np.exp(_TABLE_JITTER * rng.standard_normal(table.shape, dtype=np.float32))  # site-to-site variation
    normal_signal = np.einsum("tm,txyz->mxyz", table[:3], normal, optimize=True)
    tumour_signal = np.einsum("tm,txyz->mxyz", table[3:], tumour, optimize=True)
    texture = 1.0 + _TEXTURE * _smooth_noise(rng, shape, spacing, 4.0, count=4)  # tumour heterogeneity
    bias = np.exp(0.07 * _smooth_noise(rng, shape, spacing, 60.0, count=4))
    signal = (normal_signal + texture * tumour_signal) * bias
    sigma = rng.uniform(0.03, 0.06, (4, 1, 1, 1)).astype(np.float32)
    noisy = np.hypot(signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32),
                     sigma * rng.standard_normal(signal.shape, dtype=np.float32))  # magnitude image: Rician
    scale = np.exp(rng.uniform(np.log(200.0), np.log(2000.0), (4, 1, 1, 1))).astype(np.float32)
    # >= 1 inside the brain, so that "nonzero" recovers the skull-stripped brain mask exactly
    images = np.clip(np.rint(noisy * scale), 1, np.iinfo(np.int16).max) * brain
    return images.astype(np.int16)


def _triple(value, kind) -> tuple:
    values = tuple(kind(v) for v in np.broadcast_to(np.asarray(value), (3,)))
    if any(v <= 0 for v in values):
        raise ValueError(f"expected positive size / spacing, got {value!r}")
    return values


def generate_case(seed: int | np.random.SeedSequence, size=64, spacing=None) -> PhantomCase:
    """One synthetic case, a pure function of ``seed`` (an int or a :class:`numpy.random.SeedSequence`).

    ``size`` is voxels (an int for a cube, or 3 ints); ``spacing`` mm (a float or 3). By default the
    spacing is isotropic and chosen so that the ~145 x 181 x 155 mm brain fills the field of view.
    """
    return _simulate(seed, size, spacing)[0]


def _simulate(seed, size, spacing) -> tuple[PhantomCase, np.ndarray]:
    """The case and its (CSF, GM, WM) fractions: the ground truth that tissue-contrast tests need."""
    rng = np.random.default_rng(seed)
    shape = _triple(size, int)
    if spacing is None:
        extent = np.array(_templates_1mm().shape[1:])
        spacing = float(np.max(extent / np.array(shape)) * _BRAIN_MARGIN)
    spacing = _triple(spacing, float)
    brain, gm, wm = _warped_anatomy(rng, shape, spacing)
    tissues = np.stack([brain * np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm])
    label, tumour = _tumours(rng, shape, spacing, brain, wm, tissues[0])
    images = _render(rng, shape, spacing, tissues * (1.0 - tumour.sum(axis=0)), tumour, brain)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.array(spacing) * (np.array(shape) - 1) / 2  # field of view centred on the origin
    return PhantomCase(images=images, label=label, affine=affine), tissues


def write_case(case: PhantomCase, out_dir, case_id: str) -> Path:
    """Write ``out_dir/case_id/case_id_{flair,t1,t1ce,t2,seg}.nii.gz``; the folder appears complete or not at all."""

    final = Path(out_dir) / case_id
    with atomic_path(final) as tmp:
        tmp.mkdir()
        volumes = [*zip(MODALITIES, case.images.astype(np.int16)), ("seg", case.label.astype(np.uint8))]
        for suffix, volume in volumes:
            image = nib.Nifti1Image(volume, case.affine)
            image.set_data_dtype(volume.dtype)
            nib.save(image, tmp / f"{case_id}_{suffix}.nii.gz")
    return final


def generate_dataset(out_dir, n: int, size=64, spacing=None, seed: int = 0, prefix: str = "Phantom") -> list[Path]:
    """Write ``n`` cases ``{prefix}_000 ...`` under ``out_dir`` (existing ones are overwritten).

    Case i is generated from ``np.random.SeedSequence([seed, i])``, so it is the same whatever ``n`` is:
    a dataset of 10 cases is the first 10 of a dataset of 100.
    """
    return [
        write_case(generate_case(np.random.SeedSequence([seed, i]), size, spacing), out_dir, f"{prefix}_{i:03d}")
        for i in range(n)
    ]
