"""Shared fixtures: small synthetic BraTS-layout cases and the optional real BraTS 2018 sample."""

import os
from pathlib import Path

import numpy as np
import pytest

REAL_BRATS = Path(__file__).parents[1].parent / "shared/data/brats2018_sample"
"""Ten real BraTS 2018 cases beside the repository (``../shared/data``, the maintainers' copy: not redistributable);
tests that need them skip when absent, and fail in CI."""

REAL_AVMNIST = Path(__file__).parents[1].parent / "shared/data/avmnist"
"""MNIST's t10k files and the FSDD recordings beside the repository (the maintainers' copy), from which
``data_download.avmnist.build`` pairs AV-MNIST; tests that need it skip when absent, and fail in CI."""

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose prerequisite (real data, Chromium) is absent; in CI (``CI=true``) fail instead, so that a
    missing prerequisite cannot turn a whole tier of tests into skips that nobody reads."""
    if IN_CI:
        pytest.fail(f"{reason} -- required in CI (CI=true)", pytrace=False)
    pytest.skip(reason)

BRATS_KINDS = ("flair", "t1", "t1ce", "t2", "seg")
DEFAULT_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def make_brats_arrays(shape=(24, 24, 20), seed=0) -> dict:
    """Arrays of one synthetic case: int16 images with a brain ellipsoid (background exactly 0) and a
    BraTS label map using every value of {0, 1, 2, 4} inside the brain."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid ** 2).sum(axis=0) < 0.8 ** 2
    arrays = {}
    for c, kind in enumerate(BRATS_KINDS[:4]):
        image = np.zeros(shape, dtype=np.int16)
        image[brain] = rng.integers(100 * (c + 1), 100 * (c + 1) + 400, size=int(brain.sum()))
        arrays[kind] = image
    # Tumour: an off-centre ball with an enhancing rim, necrotic core and oedema shell.
    centre = np.array([0.25, -0.1, 0.0]).reshape(3, 1, 1, 1)
    r = np.sqrt(((grid - centre) ** 2).sum(axis=0))
    seg = np.zeros(shape, dtype=np.uint8)
    seg[(r < 0.5) & brain] = 2
    seg[(r < 0.35) & brain] = 4
    seg[(r < 0.2) & brain] = 1
    arrays["seg"] = seg
    return arrays


def _write_brats_case(folder, case_id, shape=(24, 24, 20), seed=0, **overrides) -> Path:
    """Write ``folder/case_id/case_id_{flair,t1,t1ce,t2,seg}.nii.gz`` and return the case folder.

    ``overrides``: ``<kind>=array`` replaces the array of one file (``<kind>=None`` leaves the file out),
    ``affine=`` sets the affine of every file, ``<kind>_affine=`` the affine of one file,
    ``suffix=".nii"`` writes uncompressed files.
    """
    import nibabel as nib

    arrays = make_brats_arrays(shape, seed)
    affine = overrides.pop("affine", DEFAULT_AFFINE)
    suffix = overrides.pop("suffix", ".nii.gz")
    affines = {kind: overrides.pop(f"{kind}_affine", affine) for kind in BRATS_KINDS}
    unknown = set(overrides) - set(BRATS_KINDS)
    if unknown:
        raise TypeError(f"write_brats_case: unknown overrides {sorted(unknown)}")
    arrays.update(overrides)
    case_dir = Path(folder) / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    for kind in BRATS_KINDS:
        if arrays[kind] is None:
            continue
        nib.save(nib.Nifti1Image(np.asarray(arrays[kind]), np.asarray(affines[kind], dtype=float)),
                 str(case_dir / f"{case_id}_{kind}{suffix}"))
    return case_dir


@pytest.fixture
def write_brats_case():
    """The function ``write_brats_case(folder, case_id, shape=(24, 24, 20), seed=0, **overrides)``."""
    return _write_brats_case


@pytest.fixture(scope="session")
def real_brats() -> Path:
    """The folder of real BraTS 2018 cases; the test is skipped when it is absent."""
    if not REAL_BRATS.is_dir() or not any(REAL_BRATS.iterdir()):
        skip_or_fail_in_ci(f"real BraTS sample not available at {REAL_BRATS}")
    return REAL_BRATS


@pytest.fixture(name="make_brats_arrays")
def make_brats_arrays_fixture():
    """The function ``make_brats_arrays(shape=(24, 24, 20), seed=0)`` -> dict of the arrays a case is made of."""
    return make_brats_arrays


@pytest.fixture(scope="session")
def avmnist_data_root(tmp_path_factory) -> Path:
    """A data root (what ``$MMKD_DATA_DIR`` points at) holding ``avmnist/paired``, built once per session from the
    real MNIST + FSDD copy beside the repository; the test is skipped when that copy is absent (failed in CI)."""
    if not (REAL_AVMNIST / "mnist").is_dir() or not (REAL_AVMNIST / "fsdd" / "recordings").is_dir():
        skip_or_fail_in_ci(f"real MNIST + FSDD not available at {REAL_AVMNIST}")
    from data_download.avmnist import build

    root = tmp_path_factory.mktemp("avmnist-data")
    build(REAL_AVMNIST, root / "avmnist" / "paired")
    return root
