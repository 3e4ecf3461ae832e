"""How a data set looks to a segmentation network, in two numbers per region: the statistics the phantom
generator is calibrated on.

* **Volume fraction**: voxels of the region (WT, TC, ET) over voxels of the brain (any modality non-zero).
  It sets how much of a training crop is tumour, and so how hard each region is to find.
* **Voxel-wise AUC of each modality**: after the course's preprocessing (brain crop, resampling, per-modality
  z-score), the probability that a random voxel of the region is brighter than a random voxel of the rest of
  the brain (the area under the ROC curve of the intensity as a detector; 0.5 = no information, below 0.5 =
  the region is darker). It ranks the modalities per region the way a single voxel sees them.

:func:`calibrate` computes both for every case of a BraTS- or MSD-layout folder (``mmkd calibrate DATA_DIR``);
:func:`summarise` reduces them to the per-region mean, SD, min and max that the package ships for the real
data (:func:`reference_statistics`: aggregate numbers only, no image or case-level value).
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from tqdm.auto import tqdm

from .constants import MODALITY_NAMES, REGION_NAMES, REGIONS
from .data import DataError, find_cases
from .paths import default_data_dir
from .preprocess import PreprocessConfig, cache_cases, load_cached


REFERENCE_FILE = Path(__file__).parent / "reference" / "brats2018_sample_calibration.csv"
"""Aggregate statistics of 10 real BraTS 2018 training cases at the course's real-data spacing (2 mm)."""

STATISTICS = ("fraction", *(f"auc_{name}" for name in MODALITY_NAMES), *(f"tumour_auc_{name}" for name in MODALITY_NAMES))
INNER_REGIONS = ("ET", "TC")
"""Regions whose within-tumour AUC (against the rest of WT) is measured."""


def _auc(rank: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """AUC of positive vs negative voxels from average ranks over both (Mann-Whitney U / (n_pos · n_neg))."""
    n_pos, n_neg = int(positive.sum()), int(negative.sum())
    if not n_pos or not n_neg:
        return float("nan")

    r = rankdata(rank[positive | negative])
    pos = positive[positive | negative]
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def case_statistics(images: np.ndarray, label: np.ndarray) -> dict:
    """``{region: {"fraction": f, "auc_FLAIR": a, ..., "tumour_auc_FLAIR": a, ...}}`` of one preprocessed case
    (z-scored, background 0). An AUC whose region or reference is empty is NaN (e.g. ET of a case without
    enhancement); the within-tumour AUCs of WT are NaN by definition."""
    brain = (np.asarray(images) != 0).any(axis=0)
    if not brain.any():
        raise ValueError("empty brain: every modality is zero")
    label = np.asarray(label)[brain]
    values = np.asarray(images, dtype=np.float32)[:, brain]
    whole = np.isin(label, REGIONS["WT"])
    out = {}
    for region, labels in REGIONS.items():
        inside = np.isin(label, labels)
        row = {"fraction": inside.sum() / brain.sum()}
        for name, value in zip(MODALITY_NAMES, values):
            row[f"auc_{name}"] = _auc(value, inside, ~inside)
            row[f"tumour_auc_{name}"] = _auc(value, inside, whole & ~inside) if region in INNER_REGIONS else np.nan
        out[region] = row
    return out


def calibrate(data_dir, spacing: float | None = 2.0, cache_dir=None, progress: bool = True):
    """Per case and region, the volume fraction of the brain and each modality's voxel-wise AUC.

    The cases of ``data_dir`` are preprocessed as the course does (cached, resampled to ``spacing`` mm when
    finer). Returns a long DataFrame with columns ``case, region, fraction, auc_FLAIR, auc_T1, auc_T1ce,
    auc_T2``. Cases without a label map are an error: there is nothing to measure on them.
    """

    refs = find_cases(data_dir)
    unlabelled = [ref.case_id for ref in refs if ref.label_path is None]
    if not refs or unlabelled:
        raise DataError(f"{data_dir}: calibration needs labelled cases; "
                        + (f"no label map for {', '.join(unlabelled[:3])}" if unlabelled else "no cases found"))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_data_dir() / "cache" / "calibration"
    entries = cache_cases(refs, cache_dir, PreprocessConfig(spacing=spacing), progress=progress)
    rows = []
    for entry in tqdm(entries, desc="calibrate", disable=not progress, leave=False):
        images, label = load_cached(entry, mmap=False)
        for region, stats in case_statistics(images, label).items():
            rows.append({"case": entry["case_id"], "region": region, **stats})
    return pd.DataFrame(rows)


def summarise(per_case):
    """Mean and SD over cases of every statistic, per region: a (region × statistic) table with columns
    ``region, statistic, mean, sd, cases`` (cases: how many had the statistic; ET's AUCs need enhancement)."""

    rows = []
    for region in REGION_NAMES:
        part = per_case[per_case.region == region]
        for statistic in STATISTICS:
            values = part[statistic].dropna()
            if values.empty:
                continue
            rows.append({"region": region, "statistic": statistic, "mean": values.mean(),
                         "sd": values.std(ddof=1) if len(values) > 1 else 0.0, "cases": len(values)})
    return pd.DataFrame(rows)


def reference_statistics():
    """The shipped aggregate statistics of the real BraTS 2018 sample (:func:`summarise`'s table)."""

    return pd.read_csv(REFERENCE_FILE)


def comparison_table(summary, reference=None):
    """Side by side, per region and statistic: ``summary`` (e.g. of the phantoms) and the real ``reference``
    (default: the shipped one) as mean ± SD, and ``z``, how many real SDs the two means lie apart (the
    phantoms are calibrated to |z| <= 1)."""

    reference = reference_statistics() if reference is None else reference
    ours = summary.set_index(["region", "statistic"])
    real = reference.set_index(["region", "statistic"])
    rows = []
    for key in real.index:
        rows.append({"region": key[0], "statistic": key[1],
                     "ours": f"{ours.loc[key, 'mean']:.3f} ± {ours.loc[key, 'sd']:.3f}",
                     "real": f"{real.loc[key, 'mean']:.3f} ± {real.loc[key, 'sd']:.3f}",
                     "z": round(float((ours.loc[key, "mean"] - real.loc[key, "mean"]) / real.loc[key, "sd"]), 2)})
    return pd.DataFrame(rows).set_index(["region", "statistic"])


def modality_ranking(summary) -> dict:
    """Per region, the modality names ordered by mean AUC (brightest in the region first); "ET in WT" and
    "TC in WT" rank the within-tumour AUCs."""
    table = summary.set_index(["region", "statistic"])["mean"]
    ranking = {region: sorted(MODALITY_NAMES, key=lambda m: -table[(region, f"auc_{m}")]) for region in REGION_NAMES}
    ranking.update({f"{region} in WT": sorted(MODALITY_NAMES, key=lambda m: -table[(region, f"tumour_auc_{m}")])
                    for region in INNER_REGIONS})
    return ranking
