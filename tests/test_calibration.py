"""Calibration statistics: computed right on hand-made volumes, shipped for the real sample, matched by the phantoms."""

import numpy as np
import pandas as pd
import pytest

from mmkd_helpers.calibration import REFERENCE_FILE, STATISTICS, calibrate, case_statistics, comparison_table, \
    modality_ranking, reference_statistics, summarise
from mmkd_helpers.cli import main
from mmkd_helpers.constants import MODALITY_NAMES, REGION_NAMES


def test_case_statistics_on_a_volume_small_enough_to_check_by_hand():
    """8 brain voxels (and 2 of background): ET = 1 voxel (label 4), NCR = 1 (label 1), edema = 2 (label 2).

    FLAIR ranks the voxels so that ET beats 6 of the 7 others and ties none: AUC = 6/7. T1 is constant inside
    the brain: every pair ties, AUC = 1/2. Within the tumour (ET against NCR + edema) FLAIR beats 2 of 3.
    """
    label = np.array([0, 0, 0, 0, 4, 1, 2, 2, 0, 0], dtype=np.uint8)
    flair = np.array([1, 2, 3, 4, 6, 9, 5, 0.5, 0, 0], dtype=np.float32)  # the last two voxels: background
    t1 = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=np.float32)
    images = np.stack([flair, t1, -flair, flair])  # T1ce is FLAIR mirrored: AUC 1 - 6/7
    stats = case_statistics(images, label)
    assert stats["ET"]["fraction"] == pytest.approx(1 / 8)
    assert stats["TC"]["fraction"] == pytest.approx(2 / 8) and stats["WT"]["fraction"] == pytest.approx(4 / 8)
    assert stats["ET"]["auc_FLAIR"] == pytest.approx(6 / 7) and stats["ET"]["auc_T1"] == pytest.approx(0.5)
    assert stats["ET"]["auc_T1ce"] == pytest.approx(1 / 7)
    assert stats["ET"]["tumour_auc_FLAIR"] == pytest.approx(2 / 3)
    # TC = {6, 9} against the 6 other brain voxels {1, 2, 3, 4, 5, 0.5}: 12 wins of 12 pairs
    assert stats["TC"]["auc_FLAIR"] == pytest.approx(1.0)
    assert np.isnan(stats["WT"]["tumour_auc_FLAIR"])  # WT has no "rest of the tumour"


def test_a_region_a_case_lacks_gives_nan_and_summaries_skip_it():
    label = np.array([2, 2, 0, 0], dtype=np.uint8)  # no enhancing tumour, no core
    images = np.stack([np.array([3.0, 4.0, 1.0, 2.0])] * 4)
    stats = case_statistics(images, label)
    assert stats["ET"]["fraction"] == 0 and np.isnan(stats["ET"]["auc_T1ce"])
    rows = [{"case": "a", "region": r, **v} for r, v in stats.items()]
    rows += [{"case": "b", "region": r, **v} for r, v in case_statistics(images[:, ::-1].copy(), label).items()]
    summary = summarise(pd.DataFrame(rows)).set_index(["region", "statistic"])
    assert summary.loc[("WT", "auc_FLAIR"), "mean"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert summary.loc[("WT", "auc_FLAIR"), "cases"] == 2 and ("ET", "auc_T1ce") not in summary.index


def test_the_shipped_reference_is_aggregate_only():
    table = reference_statistics()
    assert list(table.columns) == ["region", "statistic", "mean", "sd", "cases"]  # no case names, no per-case value
    assert set(table.region) == set(REGION_NAMES) and (table.cases >= 5).all()


@pytest.fixture(scope="module")
def phantom_summary(tmp_path_factory):
    from mmkd_helpers.phantom import generate_dataset

    root = tmp_path_factory.mktemp("calibration")
    generate_dataset(root / "cases", 40, size=64, seed=0)
    return summarise(calibrate(root / "cases", spacing=None, cache_dir=root / "cache", progress=False))


def test_phantoms_fall_within_the_real_spread(phantom_summary):
    """Every statistic of the course's phantoms (40 cases at the course's 64³) within one real SD of the real
    mean, and the same most-informative modality per region as the real cases (by mean AUC)."""
    table = comparison_table(phantom_summary)
    assert len(table) == len(reference_statistics())
    outside = table[table.z.abs() > 1]
    assert outside.empty, f"phantom statistics outside the real mean ± 1 SD:\n{outside}"
    ours, real = modality_ranking(phantom_summary), modality_ranking(reference_statistics())
    assert {k: v[0] for k, v in ours.items()} == {k: v[0] for k, v in real.items()}
    assert all(ours[r][-1] == real[r][-1] == "T1" for r in REGION_NAMES)  # T1 the least informative


def test_the_reference_is_what_calibrate_measures_on_the_real_sample(real_brats, tmp_path):
    summary = summarise(calibrate(real_brats, cache_dir=tmp_path, progress=False))
    shipped = reference_statistics()
    merged = shipped.merge(summary, on=["region", "statistic"], suffixes=("_shipped", "_now"))
    assert len(merged) == len(shipped)
    assert np.allclose(merged.mean_shipped, merged.mean_now, atol=1e-3) and np.allclose(merged.sd_shipped, merged.sd_now, atol=1e-3)


def test_mmkd_calibrate_prints_the_table_and_writes_the_summary(tmp_path, capsys, monkeypatch):
    from mmkd_helpers.phantom import generate_dataset

    monkeypatch.setenv("MMKD_DATA_DIR", str(tmp_path / "data"))
    generate_dataset(tmp_path / "cases", 3, size=32, seed=1)
    out = tmp_path / "summary.csv"
    assert main(["calibrate", str(tmp_path / "cases"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "auc_T1ce" in printed and "real" in printed
    summary = pd.read_csv(out)
    assert set(summary.statistic) <= set(STATISTICS) and set(summary.region) == set(REGION_NAMES)
    assert main(["calibrate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_reference_file_is_inside_the_package():
    assert REFERENCE_FILE.is_file() and "mmkd_helpers" in REFERENCE_FILE.parts
    assert all(f"auc_{m}" in set(reference_statistics().statistic) for m in MODALITY_NAMES)
