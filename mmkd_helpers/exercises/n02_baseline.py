"""Checkers of notebook 02 (the missing-modality baseline): Eq. 5 at the skip connection, the best single modality,
a prediction with no modality, the evaluation window on test, and Eq. 5 written from scratch."""

from dataclasses import replace

import torch

from ..constants import MODALITY_NAMES, REGION_NAMES
from ..evaluation import evaluate
from ..models import build_model
from ..streams import fill_missing
from . import checker, is_close, is_option

T1_ALONE = (False, True, False, False)
ALL_FOUR = (True, True, True, True)


def table_mean(results) -> float:
    """Mean Dice (%) over the regions ET, TC, WT of the per-region means of an :func:`evaluate` table."""
    return float(100.0 * results.groupby("region").dice.mean().mean())


def _mean_dice(model, volumes, roi_size, combination, overlap) -> float:
    """Mean Dice (%) over the cases and the regions ET, TC, WT of ``model`` under one ``combination``."""
    return table_mean(evaluate(model, volumes, tuple(roi_size), [combination], overlap, progress=False))


def mean_skip_change(model, volumes, roi_size, overlap) -> float:
    """Change (Dice points, mean over regions) of ``model`` with T1 alone when its weights are used with
    ``fill_skips="mean"`` instead of its own rule."""
    mean_skips = build_model(replace(model.config, fill_skips="mean"))
    mean_skips.load_state_dict(model.state_dict())
    mean_skips.to(next(model.parameters()).device)
    return (_mean_dice(mean_skips, volumes, roi_size, T1_ALONE, overlap)
            - _mean_dice(model, volumes, roi_size, T1_ALONE, overlap))


@checker("02.1", hint="a: higher, b: lower, c: within one point; think of what the decoder saw at its skip "
                      "connection during training when a modality was missing")
def _(answer, dice=None, model=None, volumes=None, roi_size=None, overlap=None):
    # dice: the notebook's measured tables {"zero": ..., "mean": ...} (evaluate, T1 alone); else measured here
    change = (table_mean(dice["mean"]) - table_mean(dice["zero"]) if dice is not None
              else mean_skip_change(model, volumes, roi_size, overlap))
    right = "c" if abs(change) <= 1.0 else "a" if change > 0 else "b"
    return str(answer).strip().lower() == right


def best_single_modality(results) -> dict:
    """Region -> the single modality with the highest mean Dice in ``results`` (:func:`evaluate`'s long table)."""
    singles = results[results["n_present"] == 1]
    means = singles.groupby(["region", "combination"]).dice.mean()
    return {region: means[region].idxmax() for region in REGION_NAMES if region in means.index.get_level_values(0)}


@checker("02.2", hint="a dict region -> modality name, e.g. {'ET': ..., 'TC': ..., 'WT': ...}; for each region "
                      "compare the four rows of the 15-combination table that hold one modality")
def _(answer, results):
    expected = best_single_modality(results)
    if not isinstance(answer, dict):
        return False, "answer with a dict region -> modality name"
    given = {str(k).strip().upper(): str(v).strip().lower() for k, v in answer.items()}
    wrong = [r for r, m in expected.items() if given.get(r) != m.lower()]
    if wrong:
        return False, (f"not right for {', '.join(wrong)} (modalities are named {', '.join(MODALITY_NAMES)}); "
                       "read the single-modality rows again")
    return True


_NO_MODALITY = "279f4521133c63a7962bda30971d4c29dbbabfa95507f8e73fbb35a5c9b560a5"  # digest("02.3", <the right option>)


@checker("02.3", hint="look at Eq. 5: what does it divide by when no modality is present? Answer with a letter")
def _(answer):
    return is_option("02.3", answer, _NO_MODALITY)


def window_gain_on_test(model, volumes, chosen: int, crop: int, overlap) -> float:
    """Mean Dice (%, over cases and regions, all four modalities) with windows of ``chosen`` voxels minus that with
    windows of the training crop ``crop``."""
    dims = model.config.spatial_dims
    return (_mean_dice(model, volumes, (int(chosen),) * dims, ALL_FOUR, overlap)
            - _mean_dice(model, volumes, (int(crop),) * dims, ALL_FOUR, overlap))


@checker("02.4", hint="evaluate the seed-0 baseline on the test cases with all four modalities, once with windows "
                      "of the chosen size and once with the training crop; the mean over cases and regions, in "
                      "Dice points, chosen minus crop")
def _(answer, dice=None, model=None, volumes=None, chosen=None, crop=None, overlap=None):
    # dice: the notebook's measured tables {"chosen": ..., "crop": ...} (evaluate, all four); else measured here
    gain = (table_mean(dice["chosen"]) - table_mean(dice["crop"]) if dice is not None
            else window_gain_on_test(model, volumes, chosen, crop, overlap))
    return is_close(answer, gain, abs_=0.3)


@checker("02.5", hint="your function takes features (N, M, C, ...) and a present mask (N, M) and returns features "
                      "of the same shape: present modalities unchanged, each missing one replaced by the mean of the "
                      "present ones of the same sample")
def _(answer):
    if not callable(answer):
        return False, "set answer to your function (its name, without calling it)"
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, 4, 3, 2, 2, generator=generator)
    present = torch.tensor([[True, False, True, False], [True, True, True, True], [False, False, False, True],
                            [False, True, True, True], [True, False, False, False]])
    got = answer(features.clone(), present.clone())
    try:
        torch.testing.assert_close(torch.as_tensor(got), fill_missing(features, present))
    except AssertionError:
        return False, "your features differ from fill_missing's; check which axis you average over and the divisor"
    return True

