"""The checkers of notebook 01 (mmkd_helpers.exercises.n01_data) on right and wrong answers, with contexts made by
hand and expected values worked out by hand."""

import numpy as np
import pytest

from mmkd_helpers.exercises import check


def _volumes():
    """Two cases: a brain of 10 voxels with 1 ET voxel (10 %) and a brain of 20 voxels with 1 ET voxel (5 %).
    The mean of the per-case percentages is 7.5 %; the pooled fraction, 2 / 30, would be 6.67 %."""
    volumes = {}
    for case, brain_voxels in (("a", 10), ("b", 20)):
        images = np.zeros((4, 5, 5, 2), dtype=np.float32)
        label = np.zeros((5, 5, 2), dtype=np.uint8)
        images[0].reshape(-1)[:brain_voxels] = 1.0  # only FLAIR non-zero: the brain is still these voxels
        label.reshape(-1)[0] = 4  # ET
        label.reshape(-1)[1] = 2  # edema: in WT, not in ET
        volumes[case] = (images, label)
    return volumes


def test_01_1_region_percentage_is_the_mean_over_cases(capsys):
    volumes = _volumes()
    assert check("01.1", 7.5, volumes=volumes, region="ET")
    assert not check("01.1", 6.67, volumes=volumes, region="ET")  # pooled over the cases
    assert "too low" in capsys.readouterr().out
    assert check("01.1", 15.0, volumes=volumes, region="WT")  # 2 of 10 and 2 of 20 voxels: (20 + 10) / 2
    assert not check("01.1", 0.075, volumes=volumes, region="ET")  # a fraction, not a percentage
    assert not check("01.1", None, volumes=volumes)
    assert "no answer yet" in capsys.readouterr().out


def test_01_2_msd_label_2_is_brats_1_in_tc_and_wt(capsys):
    assert check("01.2", "c") and check("01.2", " C ")
    for wrong in ("a", "b", "d"):
        assert not check("01.2", wrong)
    out = capsys.readouterr().out
    assert "not yet" in out and "BraTS 1" not in out


@pytest.mark.parametrize("policy, expected", [
    ("keep1to4", 0.375),  # k = 1..4 kept of 4, each with probability 1/4: missing 3/4, 2/4, 1/4, 0 -> 1.5 / 4
    ("keep1to3", 0.5),  # k = 1..3: missing 3/4, 2/4, 1/4 -> 0.5
    ("uniform15", 7 / 15),  # 7 of the 15 non-empty subsets lack a given modality (2^3 - 1)
])
def test_01_3_probability_that_t1ce_is_missing(policy, expected):
    assert check("01.3", expected + 0.01, policy=policy, modality="T1ce")
    assert not check("01.3", expected + 0.1, policy=policy, modality="T1ce")
    assert not check("01.3", 100 * expected, policy=policy, modality="T1ce")  # in %, not a probability


def test_01_3_no_policy_never_drops_and_none_is_no_answer(capsys):
    assert check("01.3", 0.0, policy="none") and not check("01.3", 0.25, policy="none")
    assert not check("01.3", None) and "no answer yet" in capsys.readouterr().out


def test_01_4_region_masks_from_scratch(capsys):
    label = np.array([[0, 1], [2, 4]], dtype=np.uint8)

    def right(lab):
        lab = np.asarray(lab)
        return np.stack([lab == 4, (lab == 1) | (lab == 4), lab > 0])

    def swapped(lab):  # the MSD-style mistake: edema in the tumour core
        lab = np.asarray(lab)
        return np.stack([lab == 4, (lab == 2) | (lab == 4), lab > 0])

    assert check("01.4", right, label=label)
    assert not check("01.4", swapped, label=label) and "TC" in capsys.readouterr().out
    assert not check("01.4", lambda lab: np.stack([lab == 4, lab > 0]), label=label)  # two masks, not three
    assert not check("01.4", right(label), label=label)  # the masks, not the function
    assert not check("01.4", None, label=label)
