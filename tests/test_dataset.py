"""Modality-drop policies and the PatchDataset (crops, flips, intensity augmentation, determinism)."""

import numpy as np
import pytest
import torch

from mmkd_helpers.constants import COMBINATIONS
from mmkd_helpers.dataset import DROP_POLICIES, PatchDataset, crop_or_pad, random_crop_start, sample_present

# --- sample_present ----------------------------------------------------------------------------------------------


def draws(policy, n, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([sample_present(rng, policy) for _ in range(n)])


@pytest.mark.parametrize("policy", sorted(DROP_POLICIES))
def test_sample_present_is_a_bool_mask_of_four(policy):
    masks = draws(policy, 50)
    assert masks.dtype == bool and masks.shape == (50, 4)
    assert masks.any(axis=1).all()  # never no modality at all


def test_keep1to3_never_all_never_none():
    counts = draws("keep1to3", 3000).sum(axis=1)
    assert set(np.unique(counts).tolist()) == {1, 2, 3}
    # k ~ U{1, 2, 3}
    assert np.allclose(np.bincount(counts, minlength=4)[1:] / len(counts), 1 / 3, atol=0.04)


def test_keep1to4_reaches_all_four():
    masks = draws("keep1to4", 3000)
    counts = masks.sum(axis=1)
    assert set(np.unique(counts).tolist()) == {1, 2, 3, 4}
    assert np.allclose(np.bincount(counts, minlength=5)[1:] / len(counts), 1 / 4, atol=0.04)
    assert np.allclose(masks.mean(axis=0), masks.mean(), atol=0.04)  # no modality favoured


def test_uniform15_reaches_every_combination_uniformly():
    from scipy.stats import chisquare

    n = 6000
    masks = draws("uniform15", n, seed=1)
    index = {combo: i for i, combo in enumerate(COMBINATIONS)}
    observed = np.bincount([index[tuple(bool(v) for v in m)] for m in masks], minlength=15)
    assert (observed > 0).all() and len(observed) == 15
    assert chisquare(observed).pvalue > 1e-3
    assert np.abs(observed / n - 1 / 15).max() < 0.02


def test_uniform15_differs_from_keep1to4_in_frequency_of_all_four():
    # uniform15: all four with p = 1/15; keep1to4: p = 1/4. A sanity check that the policies are distinct.
    full15 = draws("uniform15", 3000).all(axis=1).mean()
    full4 = draws("keep1to4", 3000).all(axis=1).mean()
    assert abs(full15 - 1 / 15) < 0.02 and abs(full4 - 1 / 4) < 0.03


def test_policy_none_keeps_all():
    assert draws("none", 20).all()


def test_bad_policy_raises_value_error_naming_choices():
    with pytest.raises(ValueError) as info:
        sample_present(np.random.default_rng(0), "uniform16")
    message = str(info.value)
    assert "uniform16" in message
    for name in DROP_POLICIES:
        assert name in message


def test_patch_dataset_rejects_bad_policy_at_construction():
    volumes = [(np.ones((4, 8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8))]
    with pytest.raises(ValueError, match="keep1to3"):
        PatchDataset(volumes, roi_size=(4, 4, 4), drop_policy="drop-some")


# --- crop helpers ------------------------------------------------------------------------------------------------


def test_crop_or_pad_crops_inside():
    array = np.arange(2 * 6 * 7 * 8).reshape(2, 6, 7, 8)
    patch = crop_or_pad(array, [1, 2, 3], (4, 5, 5))
    np.testing.assert_array_equal(patch, array[:, 1:5, 2:7, 3:8])


def test_crop_or_pad_pads_small_volume_with_zeros():
    array = np.arange(1, 1 + 2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7)
    patch = crop_or_pad(array, [0, 0, 2], (8, 6, 4))
    assert patch.shape == (2, 8, 6, 4)
    np.testing.assert_array_equal(patch[:, :5, :, :], array[:, :, :, 2:6])
    assert np.all(patch[:, 5:] == 0)
    label = np.ones((5, 6, 7), dtype=np.uint8)
    lpatch = crop_or_pad(label, [0, 0, 0], (8, 9, 10))
    assert lpatch.shape == (8, 9, 10) and lpatch.sum() == 5 * 6 * 7 and lpatch.dtype == np.uint8


def test_random_crop_start_stays_inside_volume():
    rng = np.random.default_rng(0)
    shape, roi = (20, 15, 9), (8, 8, 12)
    for _ in range(200):
        start = random_crop_start(rng, shape, roi)
        assert 0 <= start[0] <= 12 and 0 <= start[1] <= 7 and start[2] == 0


# --- PatchDataset ------------------------------------------------------------------------------------------------


def make_volume(shape=(30, 28, 26), seed=0, tumour=((12, 18), (10, 16), (9, 15))):
    """A z-scored-looking volume: brain ellipsoid with non-zero values, background exactly 0, and a tumour."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid ** 2).sum(axis=0) < 0.75
    images = np.zeros((4,) + shape, dtype=np.float32)
    images[:, brain] = rng.normal(size=(4, int(brain.sum()))).astype(np.float32) + 5.0  # never exactly 0
    label = np.zeros(shape, dtype=np.uint8)
    box = tuple(slice(a, b) for a, b in tumour)
    label[box] = 2
    label[tuple(slice(a + 2, b - 2) for a, b in tumour)] = 4
    label &= brain.astype(np.uint8) * 255  # tumour inside the brain only
    return images, label


@pytest.fixture(scope="module")
def volumes():
    return [make_volume(seed=0), make_volume((26, 30, 24), seed=1, tumour=((5, 11), (14, 20), (8, 14)))]


def same_item(a, b):
    return (torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
            and torch.equal(a["present"], b["present"]) and a["case"] == b["case"])


def test_item_shapes_and_dtypes(volumes):
    data = PatchDataset(volumes, roi_size=(16, 12, 8), seed=0)
    for i in range(5):
        item = data[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (4, 16, 12, 8)
        assert item["label"].dtype == torch.int64 and item["label"].shape == (16, 12, 8)
        assert item["present"].dtype == torch.bool and item["present"].shape == (4,)
        assert isinstance(item["case"], int) and 0 <= item["case"] < 2
        assert set(torch.unique(item["label"]).tolist()) <= {0, 2, 4}


def test_item_is_a_pure_function_of_seed_and_index(volumes):
    a = PatchDataset(volumes, roi_size=(12, 12, 12), seed=3)
    b = PatchDataset(volumes, roi_size=(12, 12, 12), seed=3)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]  # other instance, other access order
    for x, y in zip(forward, backward):
        assert same_item(x, y)
    assert not torch.equal(a[0]["image"], a[1]["image"])
    other_seed = PatchDataset(volumes, roi_size=(12, 12, 12), seed=4)
    assert not torch.equal(a[0]["image"], other_seed[0]["image"])
    assert sum(same_item(a[i], other_seed[i]) for i in range(6)) == 0


def test_dataloader_batches_match_direct_indexing(volumes):
    data = PatchDataset(volumes, roi_size=(8, 8, 8), seed=5, length=8)
    single = next(iter(torch.utils.data.DataLoader(data, batch_size=8, num_workers=0)))
    direct = torch.stack([data[i]["image"] for i in range(8)])
    assert torch.equal(single["image"], direct)
    assert single["present"].dtype == torch.bool and single["present"].shape == (8, 4)


def test_fg_prob_one_always_contains_foreground():
    # A small tumour in a large volume, so that random crops usually miss it.
    volume = make_volume((40, 40, 40), tumour=((30, 35), (4, 9), (20, 25)))
    assert volume[1].any()
    roi = (10, 10, 10)
    always = PatchDataset([volume], roi_size=roi, fg_prob=1.0, seed=0)
    assert all(always[i]["label"].any() for i in range(60))
    never = PatchDataset([volume], roi_size=roi, fg_prob=0.0, seed=0)
    assert sum(bool(never[i]["label"].any()) for i in range(60)) < 30  # the check above can fail


def test_fg_prob_one_with_roi_larger_than_volume():
    volume = make_volume((10, 12, 8), tumour=((3, 8), (3, 9), (2, 7)))
    data = PatchDataset([volume], roi_size=(16, 16, 16), fg_prob=1.0, seed=0)
    for i in range(5):
        assert data[i]["label"].any()


def test_volume_smaller_than_roi_is_zero_padded():
    images, label = make_volume((10, 12, 8), tumour=((3, 8), (3, 9), (2, 7)))
    data = PatchDataset([(images, label)], roi_size=(16, 16, 12), flip=False, intensity=0.0, fg_prob=0.0, seed=0)
    item = data[0]
    assert item["image"].shape == (4, 16, 16, 12)
    np.testing.assert_array_equal(item["image"][:, :10, :12, :8].numpy(), images)
    np.testing.assert_array_equal(item["label"][:10, :12, :8].numpy(), label)
    assert (item["image"][:, 10:] == 0).all() and (item["image"][:, :, 12:] == 0).all()
    assert (item["image"][:, :, :, 8:] == 0).all() and (item["label"][10:] == 0).all()


def test_flips_keep_image_and_label_aligned():
    images, label = make_volume((20, 20, 20), tumour=((4, 12), (6, 15), (3, 9)))
    images[1] = label * 10.0  # channel 1 encodes the label voxel by voxel
    data = PatchDataset([(images, label)], roi_size=(12, 12, 12), flip=True, intensity=0.0, seed=0)
    unflipped = PatchDataset([(images, label)], roi_size=(12, 12, 12), flip=False, intensity=0.0, seed=0)
    flipped_any = False
    for i in range(16):
        item = data[i]
        np.testing.assert_array_equal(item["image"][1].numpy(), item["label"].numpy() * 10.0)
        flipped_any |= not torch.equal(item["image"], unflipped[i]["image"])
    assert flipped_any  # flips really happen


def test_intensity_augmentation_keeps_background_exactly_zero(volumes):
    kwargs = dict(roi_size=(16, 16, 16), flip=False, fg_prob=0.0, seed=2)
    plain = PatchDataset(volumes, intensity=0.0, **kwargs)
    augmented = PatchDataset(volumes, intensity=0.2, **kwargs)
    for i in range(6):
        x, y = plain[i]["image"].numpy(), augmented[i]["image"].numpy()
        background = x == 0
        assert background.any() and (~background).any()
        assert np.all(y[background] == 0)
        assert np.all(y[~background] != 0)
        for c in range(4):  # per-modality affine change within the +-20 % scale, +-0.2 shift range
            brain = ~background[c]
            scale, shift = np.polyfit(x[c][brain], y[c][brain], 1)
            assert 0.8 <= scale <= 1.2 and -0.2 <= shift <= 0.2
            assert not np.allclose(y[c][brain], x[c][brain])


def test_drop_policy_travels_with_the_sample(volumes):
    full = PatchDataset(volumes, roi_size=(8, 8, 8), drop_policy="none")
    assert all(full[i]["present"].all() for i in range(10))
    lckd = PatchDataset(volumes, roi_size=(8, 8, 8), drop_policy="keep1to3")
    sums = [int(lckd[i]["present"].sum()) for i in range(60)]
    assert set(sums) == {1, 2, 3}


def test_works_on_memory_mapped_cache(tmp_path, write_brats_case):
    from mmkd_helpers.data import find_cases
    from mmkd_helpers.preprocess import cache_cases, load_cached

    write_brats_case(tmp_path / "src", "c0")
    entries = cache_cases(find_cases(tmp_path / "src"), tmp_path / "cache", progress=False)
    volumes = [load_cached(e) for e in entries]
    data = PatchDataset(volumes, roi_size=(16, 16, 16), fg_prob=1.0, seed=0)
    item = data[0]
    assert item["image"].shape == (4, 16, 16, 16) and item["label"].any()
    item["image"] += 1  # the sample is a writable copy, not a view of the read-only cache
    assert not np.shares_memory(volumes[0][0], item["image"].numpy())
