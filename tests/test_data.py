"""Reading BraTS and MSD cases into the canonical convention, and every error path of the reader."""

import json

import nibabel as nib
import numpy as np
import pytest

from mmkd_helpers.constants import MODALITIES, MSD_TO_BRATS
from mmkd_helpers.data import DataError, find_cases, read_case

BRATS_TO_MSD = {brats: msd for msd, brats in MSD_TO_BRATS.items()}
MSD_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}


def nifti_array(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


def write_msd_case(root, case_id, images, brats_label, affine, modality=None, extra_training=()):
    """Write an MSD Task01-layout dataset with one case: a 4D image (channels last, canonical order)
    and a label converted from BraTS to MSD labels (2->1, 1->2, 4->3)."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.stack(list(images), axis=-1), affine), str(root / "imagesTr" / f"{case_id}.nii.gz"))
    msd_label = np.zeros(brats_label.shape, dtype=np.uint8)
    for brats, msd in BRATS_TO_MSD.items():
        msd_label[brats_label == brats] = msd
    nib.save(nib.Nifti1Image(msd_label, affine), str(root / "labelsTr" / f"{case_id}.nii.gz"))
    training = [{"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}]
    meta = {"name": "BRATS", "modality": modality or MSD_MODALITY,
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "training": training + list(extra_training)}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def only_case(root):
    refs = find_cases(root)
    assert len(refs) == 1
    return refs[0]


# --- real BraTS 2018 cases ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_ref(real_brats):
    refs = find_cases(real_brats)
    assert len(refs) >= 1
    return refs[0]


@pytest.fixture(scope="module")
def real_case(real_ref):
    return read_case(real_ref)


def test_real_cases_are_found_in_brats_layout(real_brats):
    refs = find_cases(real_brats)
    folders = sorted(p.name for p in real_brats.iterdir() if p.is_dir() and not p.name.startswith("._"))
    assert [ref.case_id for ref in refs] == folders
    for ref in refs:
        assert ref.layout == "brats"
        assert [p.name for p in ref.image_paths] == [f"{ref.case_id}_{m}.nii.gz" for m in MODALITIES]
        assert ref.label_path.name == f"{ref.case_id}_seg.nii.gz"


def test_real_case_canonical_channel_order(real_ref, real_case):
    assert real_case.images.shape == (4, 240, 240, 155)
    assert real_case.images.dtype == np.float32
    flair = nifti_array(real_ref.image_paths[0].with_name(f"{real_ref.case_id}_flair.nii.gz"))
    t1ce = nifti_array(real_ref.image_paths[0].with_name(f"{real_ref.case_id}_t1ce.nii.gz"))
    assert np.array_equal(real_case.images[0], flair.astype(np.float32))
    assert np.array_equal(real_case.images[2], t1ce.astype(np.float32))
    # The four channels are four different scans (a reader that repeats one file would pass the above
    # for channel 0 only).
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(real_case.images[a], real_case.images[b])


def test_real_case_labels_shape_and_spacing(real_ref, real_case):
    assert real_case.label.shape == (240, 240, 155)
    assert real_case.label.dtype == np.uint8
    values = set(np.unique(real_case.label).tolist())
    assert values <= {0, 1, 2, 4}
    assert 0 in values and len(values) > 1  # a glioma case has some tumour
    assert np.array_equal(real_case.label, nifti_array(real_ref.label_path))
    assert real_case.spacing == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_allclose(real_case.affine, nib.load(str(real_ref.image_paths[0])).affine)


def test_real_case_written_as_msd_reads_back_identically(tmp_path, real_ref, real_case):
    assert set(np.unique(real_case.label).tolist()) == {0, 1, 2, 4}  # every label, so the remap is tested
    raw = [nifti_array(path) for path in real_ref.image_paths]  # int16, as the MSD files hold them
    write_msd_case(tmp_path / "Task01_BrainTumour", "BRATS_001", raw, real_case.label, real_case.affine)
    ref = only_case(tmp_path)  # dataset.json one level down is found too
    assert (ref.case_id, ref.layout) == ("BRATS_001", "msd")
    msd = read_case(ref)
    assert np.array_equal(msd.images, real_case.images)
    assert np.array_equal(msd.label, real_case.label)
    assert msd.label.dtype == real_case.label.dtype == np.uint8
    np.testing.assert_allclose(msd.affine, real_case.affine)
    # The label file on disk really is in MSD labels (so the equality above proves the conversion).
    on_disk = nifti_array(ref.label_path)
    assert set(np.unique(on_disk).tolist()) <= {0, 1, 2, 3}
    assert (on_disk == 1).sum() == (real_case.label == 2).sum()


# --- synthetic cases: layouts --------------------------------------------------------------------------------

def test_synthetic_brats_case_round_trip(tmp_path, write_brats_case):
    case_dir = write_brats_case(tmp_path, "c0", seed=3)
    ref = only_case(tmp_path)
    case = read_case(ref)
    assert case.case_id == "c0"
    for c, modality in enumerate(MODALITIES):
        np.testing.assert_array_equal(case.images[c], nifti_array(case_dir / f"c0_{modality}.nii.gz"))
    np.testing.assert_array_equal(case.label, nifti_array(case_dir / "c0_seg.nii.gz"))
    assert set(np.unique(case.label).tolist()) == {0, 1, 2, 4}


def test_synthetic_msd_case_matches_brats_original(tmp_path, write_brats_case):
    brats = read_case(only_case(write_brats_case(tmp_path / "brats", "c0", seed=5).parent))
    raw = [nifti_array(path) for path in only_case(tmp_path / "brats").image_paths]
    write_msd_case(tmp_path / "msd", "c0", raw, brats.label, brats.affine)
    msd = read_case(only_case(tmp_path / "msd"))
    np.testing.assert_array_equal(msd.images, brats.images)
    np.testing.assert_array_equal(msd.label, brats.label)
    assert set(np.unique(msd.label).tolist()) == {0, 1, 2, 4}


def test_uncompressed_nii_is_read(tmp_path, write_brats_case):
    write_brats_case(tmp_path, "c0", suffix=".nii")
    ref = only_case(tmp_path)
    assert all(p.name.endswith(".nii") for p in ref.image_paths)
    assert read_case(ref).images.shape == (4, 24, 24, 20)


def test_case_without_seg_has_no_label(tmp_path, write_brats_case):
    write_brats_case(tmp_path, "c0", seg=None)
    ref = only_case(tmp_path)
    assert ref.label_path is None
    assert read_case(ref).label is None


def test_hgg_lgg_subfolders_are_searched(tmp_path, write_brats_case):
    write_brats_case(tmp_path / "HGG", "b_high", seed=1)
    write_brats_case(tmp_path / "HGG", "a_high", seed=2)
    write_brats_case(tmp_path / "LGG", "c_low", seed=3)
    refs = find_cases(tmp_path)
    assert [ref.case_id for ref in refs] == ["a_high", "b_high", "c_low"]
    assert refs[2].image_paths[0] == tmp_path / "LGG" / "c_low" / "c_low_flair.nii.gz"


def test_appledouble_entries_are_ignored(tmp_path, write_brats_case):
    junk = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # AppleDouble magic + filler
    case_dir = write_brats_case(tmp_path / "HGG", "c0")
    (tmp_path / "HGG" / "._c0").write_bytes(junk)
    (tmp_path / "._HGG").write_bytes(junk)
    for kind in ("flair", "t1", "t1ce", "t2", "seg"):
        (case_dir / f"._c0_{kind}.nii.gz").write_bytes(junk)
    # A whole AppleDouble shadow folder, named and filled like a case (as an unpacked __MACOSX tree can be).
    shadow = tmp_path / "HGG" / "._c1"
    shadow.mkdir()
    for kind in ("flair", "t1", "t1ce", "t2", "seg"):
        (shadow / f"._c1_{kind}.nii.gz").write_bytes(junk)
    refs = find_cases(tmp_path)
    assert [ref.case_id for ref in refs] == ["c0"]
    assert not any(p.name.startswith("._") for p in refs[0].image_paths)
    assert read_case(refs[0]).images.shape == (4, 24, 24, 20)


def test_appledouble_entries_are_ignored_in_msd_layout(tmp_path, write_brats_case):
    brats = read_case(only_case(write_brats_case(tmp_path / "brats", "c0").parent))
    raw = list(brats.images.astype(np.int16))
    extra = [{"image": "./imagesTr/._c0.nii.gz", "label": "./labelsTr/._c0.nii.gz"}]
    root = write_msd_case(tmp_path / "msd", "c0", raw, brats.label, brats.affine, extra_training=extra)
    (root / "imagesTr" / "._c0.nii.gz").write_bytes(b"\x00\x05\x16\x07 junk")
    (root / "labelsTr" / "._c0.nii.gz").write_bytes(b"\x00\x05\x16\x07 junk")
    refs = find_cases(root)
    assert [ref.case_id for ref in refs] == ["c0"]
    np.testing.assert_array_equal(read_case(refs[0]).label, brats.label)


# --- error paths: DataError naming the offending file ---------------------------------------------------------

def _bad_case(tmp_path, write_brats_case, kind, **overrides):
    case_dir = write_brats_case(tmp_path, "c0", **overrides)
    return only_case(tmp_path), case_dir / f"c0_{kind}.nii.gz"


def _float_with_nan(shape=(24, 24, 20)):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    image[12, 12, 10] = np.nan
    return image


BAD_FILES = {
    "missing modality": ("t1ce", lambda: {"t1ce": None}, "missing"),
    "different shape": ("t2", lambda: {"t2": np.arange(24 * 24 * 18, dtype=np.int16).reshape(24, 24, 18)}, "shape"),
    "different affine": ("t1", lambda: {"t1_affine": np.diag([-2.0, -2.0, 2.0, 1.0])}, "affine"),
    "seg of different shape": ("seg", lambda: {"seg": np.zeros((24, 24, 19), np.uint8)}, "shape"),
    "unknown label 3": ("seg", lambda: {"seg": np.full((24, 24, 20), 3, np.uint8)}, "3"),
    "nan in image": ("flair", lambda: {"flair": _float_with_nan()}, "NaN"),
    "constant image": ("t1", lambda: {"t1": np.full((24, 24, 20), 7, np.int16)}, "constant"),
    "all-zero image": ("t2", lambda: {"t2": np.zeros((24, 24, 20), np.int16)}, "constant"),
}


@pytest.mark.parametrize("problem", list(BAD_FILES))
def test_bad_brats_file_raises_data_error_naming_it(tmp_path, write_brats_case, problem):
    kind, overrides, words = BAD_FILES[problem]
    ref, offending = _bad_case(tmp_path, write_brats_case, kind, **overrides())
    with pytest.raises(DataError) as info:
        read_case(ref)
    message = str(info.value)
    assert message.startswith(str(offending)), message
    assert words in message


def test_label_with_3_among_valid_labels_is_rejected(tmp_path, write_brats_case, make_brats_arrays):
    seg = make_brats_arrays()["seg"]
    seg[seg == 1] = 3  # one stray MSD-style value in an otherwise valid BraTS map
    ref, offending = _bad_case(tmp_path, write_brats_case, "seg", seg=seg)
    with pytest.raises(DataError, match=r"unknown label values \[3\]") as info:
        read_case(ref)
    assert str(offending) in str(info.value)


def test_truncated_gzip_raises_data_error_naming_it(tmp_path, write_brats_case):
    case_dir = write_brats_case(tmp_path, "c0")
    offending = case_dir / "c0_t2.nii.gz"
    data = offending.read_bytes()
    offending.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_case(only_case(tmp_path))
    assert str(info.value).startswith(str(offending))
    assert "truncated or corrupt" in str(info.value)


def test_empty_folder_raises_data_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no cases found") as info:
        find_cases(empty)
    assert str(empty) in str(info.value)


def test_missing_folder_raises_data_error(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(DataError, match="no such folder") as info:
        find_cases(missing)
    assert str(missing) in str(info.value)


def test_file_instead_of_folder_raises_data_error(tmp_path):
    path = tmp_path / "cases.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        find_cases(path)


@pytest.mark.parametrize("modality", [
    {"0": "T1w", "1": "FLAIR", "2": "t1gd", "3": "T2w"},
    {"0": "FLAIR", "1": "T1w", "2": "T2w", "3": "t1gd"},
    {"0": "FLAIR", "1": "T1w", "2": "t1gd"},
])
def test_msd_wrong_channel_order_raises_data_error(tmp_path, write_brats_case, modality):
    brats = read_case(only_case(write_brats_case(tmp_path / "brats", "c0").parent))
    root = write_msd_case(tmp_path / "msd", "c0", list(brats.images.astype(np.int16)), brats.label, brats.affine,
                          modality=modality)
    with pytest.raises(DataError, match="channel order") as info:
        find_cases(root)
    assert str(root / "dataset.json") in str(info.value)


def test_msd_label_with_brats_value_4_is_rejected(tmp_path, write_brats_case):
    brats = read_case(only_case(write_brats_case(tmp_path / "brats", "c0").parent))
    root = write_msd_case(tmp_path / "msd", "c0", list(brats.images.astype(np.int16)), brats.label, brats.affine)
    label_path = root / "labelsTr" / "c0.nii.gz"
    nib.save(nib.Nifti1Image(brats.label, brats.affine), str(label_path))  # BraTS labels where MSD ones belong
    with pytest.raises(DataError, match="unknown label values") as info:
        read_case(only_case(root))
    assert str(label_path) in str(info.value)


def test_msd_3d_image_raises_data_error(tmp_path, write_brats_case):
    brats = read_case(only_case(write_brats_case(tmp_path / "brats", "c0").parent))
    root = write_msd_case(tmp_path / "msd", "c0", list(brats.images.astype(np.int16))[:3], brats.label, brats.affine)
    with pytest.raises(DataError, match="4 channels") as info:
        read_case(only_case(root))
    assert str(root / "imagesTr" / "c0.nii.gz") in str(info.value)


def test_msd_unreadable_dataset_json_raises_data_error(tmp_path):
    (tmp_path / "dataset.json").write_text('{"modality": {"0": "FLAIR"')
    with pytest.raises(DataError, match="not readable JSON") as info:
        find_cases(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value)
