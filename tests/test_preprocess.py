"""Brain crop, resampling, z-score and the atomic .npy cache with its manifest."""

import errno
import json
import os

import numpy as np
import pytest

from mmkd_helpers import preprocess
from mmkd_helpers.data import find_cases, read_case
from mmkd_helpers.fileio import WriteError
from mmkd_helpers.preprocess import (PreprocessConfig, brain_bbox, brain_mask, cache_cases, load_cached,
                                     preprocess_case, resample, zscore)

# --- brain_bbox -------------------------------------------------------------------------------------------------


def test_brain_bbox_without_margin_is_tight():
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[3:6, 4:8, 5] = True
    mask[4, 9, 7] = True
    assert brain_bbox(mask) == (slice(3, 6), slice(4, 10), slice(5, 8))


def test_brain_bbox_margin_widens_and_clips():
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[1:3, 5:7, 11:13] = True
    # axis 0: 1-2 -> 1 below is clipped to 0; axis 1: fits; axis 2: 11-12 +2 would reach 15 > 14 -> clipped.
    assert brain_bbox(mask, margin=2) == (slice(0, 5), slice(3, 9), slice(9, 14))
    assert brain_bbox(mask, margin=100) == (slice(0, 10), slice(0, 12), slice(0, 14))


def test_brain_bbox_of_empty_mask_raises():
    with pytest.raises(ValueError, match="empty"):
        brain_bbox(np.zeros((4, 4, 4), dtype=bool))


def test_brain_mask_is_any_modality_nonzero():
    images = np.zeros((4, 3, 3, 3), dtype=np.float32)
    images[2, 0, 0, 0] = 5
    images[0, 1, 1, 1] = -1
    mask = brain_mask(images)
    assert mask.sum() == 2 and mask[0, 0, 0] and mask[1, 1, 1]


# --- zscore ------------------------------------------------------------------------------------------------------


def _ellipsoid(shape):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    return (grid ** 2).sum(axis=0) < 0.7


def test_zscore_standardises_brain_and_zeroes_background():
    rng = np.random.default_rng(0)
    shape = (20, 18, 16)
    mask = _ellipsoid(shape)
    scales = np.array([1.0, 30.0, 800.0, 5000.0]).reshape(4, 1, 1, 1)
    images = (rng.normal(3.0, 1.0, size=(4,) + shape) * scales + scales).astype(np.float32)
    out = zscore(images, mask)
    assert out.dtype == np.float32 and out.shape == images.shape
    for channel in out:
        assert abs(float(channel[mask].mean())) < 1e-4
        assert float(channel[mask].std()) == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[:, ~mask] == 0)
    # The z-score is per modality: one channel's scale does not leak into another.
    assert np.allclose(out[0][mask], (images[0][mask] - images[0][mask].mean()) / images[0][mask].std(), atol=1e-4)


def test_zscore_of_constant_brain_channel_is_zero_not_nan():
    mask = _ellipsoid((8, 8, 8))
    images = np.stack([np.where(mask, 5.0, 0.0), np.where(mask, np.arange(512.0).reshape(8, 8, 8), 0.0)])
    out = zscore(images.astype(np.float32), mask)
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)


# --- resample ----------------------------------------------------------------------------------------------------


def _label_blobs(shape):
    label = np.zeros(shape, dtype=np.uint8)
    label[1:12, 1:12, 1:12] = 2
    label[3:10, 3:10, 3:10] = 4  # a 2-voxel shell: survives any 2x sampling phase
    label[5:8, 5:8, 5:8] = 1
    return label


def test_resample_to_2mm_halves_a_1mm_grid_with_rounding():
    shape = (24, 23, 20)  # 23 mm / 2 mm = 11.5 -> 12 voxels (rounded, not truncated)
    images = np.random.default_rng(0).normal(size=(4,) + shape).astype(np.float32)
    out, label = resample(images, _label_blobs(shape), (1.0, 1.0, 1.0), 2.0)
    assert out.shape == (4, 12, 12, 10)
    assert out.dtype == np.float32
    assert label.shape == (12, 12, 10)


def test_resample_respects_anisotropic_spacing():
    images = np.ones((4, 24, 24, 10), dtype=np.float32)
    out, label = resample(images, None, (1.0, 1.0, 2.0), 2.0)
    assert out.shape == (4, 12, 12, 10)
    assert label is None
    np.testing.assert_allclose(out, 1.0, atol=1e-6)  # trilinear keeps a constant image constant


def test_resample_labels_by_nearest_neighbour_stay_in_label_set():
    shape = (24, 24, 20)
    label = _label_blobs(shape)
    images = np.stack([label.astype(np.float32)] * 4)
    _, out = resample(images, label, (1.0, 1.0, 1.0), 2.0)
    assert out.dtype == np.uint8
    assert set(np.unique(out).tolist()) == {0, 1, 2, 4}  # no interpolated 3s, nothing lost


def test_resample_to_finer_grid_doubles_shape():
    label = _label_blobs((12, 12, 12))
    out, lab = resample(np.stack([label.astype(np.float32)] * 4), label, (2.0, 2.0, 2.0), 1.0)
    assert out.shape == (4, 24, 24, 24)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 4}


# --- preprocess_case ---------------------------------------------------------------------------------------------


def test_preprocess_case_crops_to_brain_and_standardises(tmp_path, write_brats_case):
    case = read_case(find_cases(write_brats_case(tmp_path, "c0").parent)[0])
    box = brain_bbox(brain_mask(case.images), 2)
    images, label = preprocess_case(case, PreprocessConfig(margin=2))
    assert images.shape == (4,) + tuple(s.stop - s.start for s in box)
    assert images.shape[1:] != case.images.shape[1:]  # the synthetic brain does not fill its box
    assert images.dtype == np.float32
    np.testing.assert_array_equal(label, case.label[box])
    for value in (1, 2, 4):  # no tumour voxel cut away
        assert (label == value).sum() == (case.label == value).sum()
    mask = brain_mask(case.images[(slice(None),) + box])
    assert np.all(images[:, ~mask] == 0)
    for channel in images:
        assert abs(float(channel[mask].mean())) < 1e-4
        assert float(channel[mask].std()) == pytest.approx(1.0, abs=1e-3)


def test_preprocess_case_with_spacing_resamples(tmp_path, write_brats_case):
    case = read_case(find_cases(write_brats_case(tmp_path, "c0").parent)[0])
    full, _ = preprocess_case(case, PreprocessConfig(margin=2))
    images, label = preprocess_case(case, PreprocessConfig(spacing=2.0, margin=2))
    assert images.shape[1:] == tuple(int(round(n / 2)) for n in full.shape[1:])
    assert label.shape == images.shape[1:]
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4}
    assert np.isfinite(images).all()


def test_preprocess_real_case(real_brats):
    case = read_case(find_cases(real_brats)[0])
    images, label = preprocess_case(case)
    assert images.shape[0] == 4 and label.shape == images.shape[1:]
    assert all(n <= 240 for n in images.shape[1:3]) and images.shape[3] <= 155
    assert np.prod(images.shape[1:]) < 0.7 * 240 * 240 * 155  # the crop removes much empty space
    for value in (1, 2, 4):
        assert (label == value).sum() == (case.label == value).sum()
    mask = images.any(axis=0)
    assert 0.3 < mask.mean() < 1.0
    for channel in images:
        assert abs(float(channel[mask].mean())) < 0.05  # not exactly 0: mask here is post-z-score
        assert 0.9 < float(channel[mask].std()) < 1.1
    assert float(np.abs(images).max()) < 100  # raw scanner scale (hundreds to 32767) is gone


# --- cache_cases / load_cached -----------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path, write_brats_case):
    src = tmp_path / "src"
    write_brats_case(src, "c0", seed=0)
    write_brats_case(src, "c1", seed=1, shape=(22, 24, 18))
    return src


@pytest.fixture
def read_counter(monkeypatch):
    calls = []

    def counting_read_case(ref):
        calls.append(ref.case_id)
        return read_case(ref)

    monkeypatch.setattr(preprocess, "read_case", counting_read_case)
    return calls


def _leftovers(folder):
    """Temporary or backup entries that an atomic write should not leave behind."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_cache_cases_writes_arrays_and_manifest(tmp_path, source):
    refs = find_cases(source)
    entries = cache_cases(refs, tmp_path / "cache", progress=False)
    config = PreprocessConfig()
    root = tmp_path / "cache" / config.key()
    assert [e["case_id"] for e in entries] == ["c0", "c1"]
    for ref, entry in zip(refs, entries):
        assert entry["image"].parent == root and entry["label"].parent == root
        images, label = load_cached(entry)
        expected_images, expected_label = preprocess_case(read_case(ref), config)
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(label, expected_label)
        assert entry["shape"] == images.shape[1:] == label.shape
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["cases"]) == {"c0", "c1"}
    assert _leftovers(tmp_path / "cache") == []


def test_cache_cases_second_call_reuses(tmp_path, source, read_counter):
    refs = find_cases(source)
    first = cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c0", "c1"]
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*")}
    second = cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c0", "c1"]  # nothing read again
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*")} == mtimes  # nothing rewritten


def test_cache_cases_rebuilds_a_changed_source(tmp_path, source, read_counter, make_brats_arrays):
    import nibabel as nib

    refs = find_cases(source)
    old_images, _ = load_cached(cache_cases(refs, tmp_path / "cache", progress=False)[1], mmap=False)
    flair = source / "c1" / "c1_flair.nii.gz"
    before = flair.stat()
    affine = nib.load(str(flair)).affine
    nib.save(nib.Nifti1Image(make_brats_arrays((22, 24, 18), seed=7)["flair"], affine), str(flair))  # new content
    os.utime(flair, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    read_counter.clear()
    entries = cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c1"]  # only the changed case
    new_images, _ = load_cached(entries[1])
    assert not np.array_equal(new_images, old_images)
    np.testing.assert_array_equal(new_images, preprocess_case(read_case(refs[1]))[0])
    assert _leftovers(tmp_path / "cache") == []


def test_cache_cases_rebuilds_when_only_mtime_changes(tmp_path, source, read_counter):
    refs = find_cases(source)
    cache_cases(refs, tmp_path / "cache", progress=False)
    seg = source / "c0" / "c0_seg.nii.gz"
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 3_000_000_000))
    read_counter.clear()
    cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c0"]


def test_cache_cases_new_config_gets_new_folder(tmp_path, source, read_counter):
    refs = find_cases(source)
    default = cache_cases(refs, tmp_path / "cache", progress=False)
    coarse_config = PreprocessConfig(spacing=2.0)
    assert coarse_config.key() != PreprocessConfig().key()
    read_counter.clear()
    coarse = cache_cases(refs, tmp_path / "cache", coarse_config, progress=False)
    assert read_counter == ["c0", "c1"]  # recomputed, not reused from the other config
    assert coarse[0]["image"].parent == tmp_path / "cache" / coarse_config.key()
    assert default[0]["image"].exists()  # the old config's cache is left alone
    for d, c in zip(default, coarse):
        assert c["shape"] == tuple(int(round(n / 2)) for n in d["shape"])
        assert load_cached(c)[0].shape[1:] == c["shape"]
    margin_config = PreprocessConfig(margin=0)
    read_counter.clear()
    tight = cache_cases(refs, tmp_path / "cache", margin_config, progress=False)
    assert read_counter == ["c0", "c1"]
    assert all(t["shape"] != d["shape"] for t, d in zip(tight, default))
    assert len({PreprocessConfig().key(), coarse_config.key(), margin_config.key()}) == 3
    assert _leftovers(tmp_path / "cache") == []


def test_cache_cases_corrupt_manifest_costs_a_rebuild(tmp_path, source, read_counter):
    refs = find_cases(source)
    first = cache_cases(refs, tmp_path / "cache", progress=False)
    manifest = tmp_path / "cache" / PreprocessConfig().key() / "manifest.json"
    text = manifest.read_bytes()
    manifest.write_bytes(text[: len(text) // 2])
    read_counter.clear()
    again = cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c0", "c1"]
    assert again == first
    assert set(json.loads(manifest.read_text())["cases"]) == {"c0", "c1"}  # repaired
    read_counter.clear()
    cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == []


@pytest.mark.parametrize("content", ["[]", '{"cases": null}', '{"cases": {"c0": {"image": "c0_image.npy"}}}'],
                         ids=["list", "cases-null", "entry-missing-keys"])
def test_cache_cases_manifest_of_wrong_shape_costs_a_rebuild(tmp_path, source, read_counter, content):
    refs = find_cases(source)
    cache_cases(refs, tmp_path / "cache", progress=False)
    (tmp_path / "cache" / PreprocessConfig().key() / "manifest.json").write_text(content)
    read_counter.clear()
    entries = cache_cases(refs, tmp_path / "cache", progress=False)
    assert [e["case_id"] for e in entries] == ["c0", "c1"]
    assert read_counter  # at least the case(s) the manifest lost were rebuilt


def test_cache_cases_rebuilds_a_deleted_array(tmp_path, source, read_counter):
    refs = find_cases(source)
    entries = cache_cases(refs, tmp_path / "cache", progress=False)
    entries[0]["label"].unlink()
    read_counter.clear()
    again = cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c0"]
    assert again[0]["label"].exists()


def test_interrupted_cache_write_leaves_no_partial_files(tmp_path, source, read_counter, monkeypatch):
    refs = find_cases(source)
    real_save = np.save
    saves = []

    def failing_save(file, array, *args, **kwargs):
        saves.append(array.shape)
        if len(saves) == 3:  # c0 image, c0 label, then c1 image dies half-written
            file.write(b"\x93NUMPY partial")
            raise RuntimeError("disk full")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        cache_cases(refs, tmp_path / "cache", progress=False)
    monkeypatch.setattr(np, "save", real_save)
    root = tmp_path / "cache" / PreprocessConfig().key()
    assert _leftovers(tmp_path / "cache") == []
    assert not (root / "c1_image.npy").exists()
    assert set(json.loads((root / "manifest.json").read_text())["cases"]) == {"c0"}
    read_counter.clear()
    entries = cache_cases(refs, tmp_path / "cache", progress=False)
    assert read_counter == ["c1"]  # c0 survived the interruption and is reused
    assert load_cached(entries[1])[0].shape[1:] == entries[1]["shape"]


def test_disk_full_while_caching_keeps_the_previous_arrays(tmp_path, source, monkeypatch):
    refs = find_cases(source)
    cache_cases(refs, tmp_path / "cache", progress=False)
    root = tmp_path / "cache" / PreprocessConfig().key()
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    flair = source / "c0" / "c0_flair.nii.gz"
    os.utime(flair, ns=(flair.stat().st_atime_ns, flair.stat().st_mtime_ns + 2_000_000_000))  # c0 is rebuilt
    real_save = np.save

    def disk_full(file, array, *args, **kwargs):
        file.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(WriteError) as error:
        cache_cases(refs, tmp_path / "cache", progress=False)
    assert str(error.value) == (f"{root / 'c0_image.npy'}: could not write (No space left on device); "
                                "the previous file is unchanged")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before  # arrays and manifest as they were
    assert _leftovers(tmp_path / "cache") == []
    monkeypatch.setattr(np, "save", real_save)
    entries = cache_cases(refs, tmp_path / "cache", progress=False)  # space freed: c0 is rebuilt
    np.testing.assert_array_equal(load_cached(entries[0])[0], preprocess_case(read_case(refs[0]))[0])


def test_cache_cases_of_unlabelled_case(tmp_path, write_brats_case):
    write_brats_case(tmp_path / "src", "u0", seg=None)
    (entry,) = cache_cases(find_cases(tmp_path / "src"), tmp_path / "cache", progress=False)
    assert entry["label"] is None
    images, label = load_cached(entry)
    assert label is None and images.shape[1:] == entry["shape"]


def test_load_cached_memory_maps(tmp_path, source):
    entry = cache_cases(find_cases(source), tmp_path / "cache", progress=False)[0]
    images, label = load_cached(entry)
    assert isinstance(images, np.memmap) and isinstance(label, np.memmap)
    assert not images.flags.writeable  # read-only: a training loop cannot corrupt the cache
    in_memory, in_memory_label = load_cached(entry, mmap=False)
    assert not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(in_memory, images)
    np.testing.assert_array_equal(in_memory_label, label)
    assert images.dtype == np.float32 and label.dtype == np.uint8


def _centre_bias(target: float) -> tuple:
    """Mean offset (mm, along axis 0) of the resampled label's and image's centroid from the true centroid of a
    box, averaged over box positions and widths so that grid phase cancels out."""
    from scipy import ndimage

    n = 48
    label_bias, image_bias = [], []
    for start in range(10, 19):
        for width in (9, 10, 11):
            label = np.zeros((n, 16, 16), dtype=np.uint8)
            label[start:start + width, 4:12, 4:12] = 2
            images, out = resample(np.stack([label.astype(np.float32)] * 4), label, (1.0, 1.0, 1.0), target)
            step = n / out.shape[0]  # mm per output voxel along axis 0
            true = start + (width - 1) / 2
            label_bias.append((ndimage.center_of_mass(out > 0)[0] + 0.5) * step - 0.5 - true)
            image_bias.append((ndimage.center_of_mass(images[0])[0] + 0.5) * step - 0.5 - true)
    return float(np.mean(label_bias)), float(np.mean(image_bias))


def test_resampled_image_is_not_shifted():
    for target in (1.5, 2.0, 3.0):
        assert abs(_centre_bias(target)[1]) < 0.05


@pytest.mark.parametrize("target", [1.5, 3.0])
def test_resampled_label_stays_aligned_with_image(target):
    label_bias, image_bias = _centre_bias(target)
    assert abs(label_bias - image_bias) < 0.25
