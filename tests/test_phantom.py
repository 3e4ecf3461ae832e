"""Tests of the BraTS-format phantom generator: format, determinism, and that the contrasts and the
per-modality information content measured on generated data behave like real BraTS."""

import re
import sys

import numpy as np
import pytest

from mmkd_helpers import phantom
from mmkd_helpers.constants import MODALITIES, MODALITY_NAMES, REGIONS

SIZE = 48  # small enough for a fast suite, large enough for every tumour compartment to show up
SEEDS = range(6)
FLAIR, T1, T1CE, T2 = range(4)


@pytest.fixture(scope="module")
def simulated():
    """(case, tissue fractions) for a handful of seeds, shared by the measurement tests."""
    return [phantom._simulate(seed, SIZE, None) for seed in SEEDS]


def _brain(case):
    return case.images[0] > 0


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Rank-based (Mann-Whitney) ROC AUC, direction-free: max(AUC, 1 - AUC)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = positive.sum()
    n_neg = positive.size - n_pos
    auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return max(auc, 1.0 - auc)


def test_same_seed_same_case_and_different_seed_different_case():
    a, b, c = phantom.generate_case(3, 32), phantom.generate_case(3, 32), phantom.generate_case(4, 32)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.label, c.label)


def test_dtypes_shapes_labels_and_affine():
    case = phantom.generate_case(0, size=(40, 48, 36), spacing=(4.0, 3.5, 4.5))
    assert case.images.shape == (4, 40, 48, 36) and case.images.dtype == np.int16
    assert case.label.shape == (40, 48, 36) and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= {0, 1, 2, 4}
    np.testing.assert_allclose(np.diag(case.affine), [4.0, 3.5, 4.5, 1.0])
    assert case.affine.shape == (4, 4)


def test_default_spacing_makes_the_brain_fill_the_field_of_view():
    case = phantom.generate_case(0, 32)
    assert np.allclose(np.diag(case.affine)[:3], case.affine[0, 0])  # isotropic
    extent = [np.ptp(np.nonzero(_brain(case).any(axis=tuple(a for a in range(3) if a != axis)))) + 1
              for axis in range(3)]
    assert max(extent) >= 0.8 * 32


def test_skull_stripped_background_is_exactly_zero(simulated):
    for case, tissues in simulated:
        brain = _brain(case)
        for m in range(4):
            np.testing.assert_array_equal(case.images[m] > 0, brain)  # one mask shared by all modalities
        assert (case.images >= 0).all()
        assert (case.label[~brain] == 0).all()
        assert (tissues[:, ~brain] == 0).all()
        assert 0.1 < brain.mean() < 0.6
        for face in (case.images[:, 0], case.images[:, -1], case.images[:, :, 0], case.images[:, :, :, -1]):
            assert (face == 0).all()


def test_raw_values_look_like_scanner_values(simulated):
    """Arbitrary units per modality and case, so that downstream code must normalise."""
    medians = np.array([[np.median(case.images[m][_brain(case)]) for m in range(4)] for case, _ in simulated])
    assert medians.min() > 50 and medians.max() > 300
    assert len(np.unique(medians.round(-1))) > 10  # scales differ between modalities and cases


def test_tumour_compartments_are_nested_and_present():
    cases = [phantom.generate_case(seed, 32) for seed in range(40)]
    for case in cases:
        assert (case.label == 2).any(), "edema must always surround the core: ET and TC never cover the WT"
        assert np.isin(case.label, (1, 4)).any()
    no_enhancement = sum(not (case.label == 4).any() for case in cases)
    assert 1 <= no_enhancement <= 12  # some low-grade-like cases, most with an enhancing rim


def test_write_case_reads_back_with_brats_names(tmp_path):
    import nibabel as nib

    case = phantom.generate_case(5, 24)
    folder = phantom.write_case(case, tmp_path, "Phantom_005")
    assert folder == tmp_path / "Phantom_005"
    names = {f"Phantom_005_{suffix}.nii.gz" for suffix in (*MODALITIES, "seg")}
    assert {p.name for p in folder.iterdir()} == names
    assert [p.name for p in tmp_path.iterdir()] == ["Phantom_005"]  # no temporary left behind
    for m, suffix in enumerate(MODALITIES):
        image = nib.load(folder / f"Phantom_005_{suffix}.nii.gz")
        assert image.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), case.images[m])
        np.testing.assert_allclose(image.affine, case.affine)
    seg = nib.load(folder / "Phantom_005_seg.nii.gz")
    assert seg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(seg.dataobj), case.label)


def test_generate_dataset_case_does_not_depend_on_n(tmp_path):
    import nibabel as nib

    short = phantom.generate_dataset(tmp_path / "a", 2, size=20, seed=7)
    long = phantom.generate_dataset(tmp_path / "b", 3, size=20, seed=7)
    assert [p.name for p in long] == ["Phantom_000", "Phantom_001", "Phantom_002"]
    for a, b in zip(short, long):
        for suffix in (*MODALITIES, "seg"):
            np.testing.assert_array_equal(np.asanyarray(nib.load(a / f"{a.name}_{suffix}.nii.gz").dataobj),
                                          np.asanyarray(nib.load(b / f"{b.name}_{suffix}.nii.gz").dataobj))
    first = np.asanyarray(nib.load(long[0] / "Phantom_000_flair.nii.gz").dataobj)
    second = np.asanyarray(nib.load(long[1] / "Phantom_001_flair.nii.gz").dataobj)
    assert not np.array_equal(first, second)
    again = phantom.generate_dataset(tmp_path / "a", 2, size=20, seed=7, prefix="Phantom")  # overwrites
    assert again == short


def test_contrasts_follow_mr_physics(simulated):
    def mean(modality, mask):
        return np.mean(np.concatenate([case.images[modality][m] / np.median(case.images[modality][_brain(case)])
                                       for (case, _), m in zip(simulated, mask)]))

    et = [case.label == 4 for case, _ in simulated]
    edema = [case.label == 2 for case, _ in simulated]
    wm = [(t[2] > 0.9) & (case.label == 0) for case, t in simulated]
    csf = [(t[0] > 0.9) & (case.label == 0) for case, t in simulated]
    assert mean(T1CE, et) > mean(T1CE, edema) and mean(T1CE, et) > mean(T1CE, wm)
    assert mean(FLAIR, edema) > mean(FLAIR, wm)
    assert mean(FLAIR, csf) < mean(FLAIR, wm)
    assert mean(T2, csf) > mean(T2, wm)
    assert mean(T1, edema) < mean(T1, wm)


def test_best_modality_per_region_is_a_property_of_the_data(simulated):
    """Per-voxel AUC of each z-scored modality, as on real BraTS cases (mmkd_helpers.calibration): against the
    rest of the brain FLAIR marks the whole tumour best and T1 says least; inside the tumour, T1ce is what tells
    the enhancing tumour from the rest."""
    scores, labels = [], []
    for case, _ in simulated:
        brain = _brain(case)
        values = case.images[:, brain].astype(np.float64)
        scores.append((values - values.mean(1, keepdims=True)) / values.std(1, keepdims=True))
        labels.append(case.label[brain])
    scores, labels = np.concatenate(scores, axis=1), np.concatenate(labels)
    auc = {region: [_auc(scores[m], np.isin(labels, members)) for m in range(4)]
           for region, members in REGIONS.items()}
    tumour = labels > 0
    auc["ET in WT"] = [_auc(scores[m][tumour], labels[tumour] == 4) for m in range(4)]
    table = "\n".join(f"{r}: " + " ".join(f"{n}={a:.3f}" for n, a in zip(MODALITY_NAMES, v)) for r, v in auc.items())
    assert int(np.argmax(auc["WT"])) == FLAIR, table
    assert int(np.argmax(auc["ET in WT"])) == T1CE, table
    information = np.abs(np.array([auc[r] for r in REGIONS]) - 0.5).mean(axis=0)
    assert int(np.argmin(information)) == T1, table  # T1 is the weakest overall


def test_contrast_table_is_documented_and_exported():
    assert set(phantom.CONTRAST_TABLE) >= {"csf", "grey_matter", "white_matter", "edema", "necrotic_core",
                                           "enhancing_tumour"}
    for tissue, values in phantom.CONTRAST_TABLE.items():
        row = re.search(rf"^{tissue}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\S", phantom.__doc__, re.M)
        assert row, f"{tissue} missing from the module docstring's table"
        assert tuple(float(v) for v in row.groups()) == values, f"docstring and CONTRAST_TABLE disagree on {tissue}"
    frame = phantom.contrast_table()
    assert list(frame.columns) == list(MODALITY_NAMES) and list(frame.index) == list(phantom.CONTRAST_TABLE)


def test_the_shipped_templates_are_the_mni152_maps_and_need_no_nilearn():
    """The phantom's anatomy comes from the templates shipped in the package, not from an installed nilearn."""
    import hashlib

    assert hashlib.sha256(phantom.TEMPLATES_FILE.read_bytes()).hexdigest() == "1641e30c6def913cc95599209660fee3438fbcd6c0ca93abb4ea4d6d997a5405"
    assert (phantom.TEMPLATES_FILE.parent / "MNI152_LICENCE.txt").is_file()
    maps = phantom._templates_1mm()
    assert maps.shape == (3, 145, 181, 155) and maps.dtype == np.float32
    brain, grey, white = maps
    assert set(np.unique(brain)) == {0.0, 1.0} and grey.max() <= 1 and white.max() <= 1
    assert not grey[brain == 0].any() and not white[brain == 0].any()
    # cropped to the brain's bounding box: every face of the box touches the brain
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        assert brain.any(axis=other)[[0, -1]].all()
    # a brain of about 1.1-1.9 litres at 1 mm
    assert 1.1e6 < brain.sum() < 1.9e6
    assert "nilearn" not in sys.modules


def test_version_is_a_string():
    assert isinstance(phantom.PHANTOM_VERSION, str) and phantom.PHANTOM_VERSION
