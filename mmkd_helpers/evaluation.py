"""Evaluation: full-volume sliding-window inference under each of the 15 modality combinations,
per-case Dice for ET / TC / WT, tables shaped like Table 1 of the LCKD paper, one-tailed paired t-tests.

Conventions (choices recorded here because the papers differ):
* sliding windows from MONAI of the training crop's size (:func:`check_window`), Gaussian blending, overlap 1/3
  (the LCKD code's); logits are blended, then thresholded
  (sigmoid > 0.5 for the region head, argmax for the class head);
* the label map is rebuilt hierarchically as in the LCKD evaluation (WT -> 2, then TC -> 1, then
  ET -> 4), and regions are read off it, so ET is inside TC inside WT;
* Dice of an empty prediction against an empty ground truth is 1 (the BraTS convention); no post-processing;
* HD95 (optional, ``evaluate(..., hd95=True)``): MONAI's symmetric 95th-percentile Hausdorff distance between the
  region surfaces, in mm of the evaluated grid (``spacing``); empty against empty is 0, and exactly one empty mask
  scores :data:`BRATS_HD95_PENALTY` -- conventions of the BraTS evaluation, not properties of the distance.
"""

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy.stats import ttest_rel
from tqdm.auto import tqdm

from .constants import (CLASS_LABELS, COMBINATIONS, MODALITIES, MODALITY_NAMES, REGION_NAMES, combination_marks,
                        combination_name)
from .losses.segmentation import region_masks


OVERLAP = 1 / 3
"""Overlap of neighbouring sliding windows: the LCKD code's (its tiles overlap by a third)."""

BRATS_HD95_PENALTY = 373.13
"""HD95 (mm) scored when exactly one of prediction and ground truth is empty: the diagonal of the 240 x 240 x 155
BraTS volume at 1 mm, sqrt(240² + 240² + 155²) = 373.13, the value the official BraTS evaluation uses. A convention,
not a distance: it is as large as a distance in a BraTS volume can be, so a missed or invented region costs the most
HD95 can cost, whatever the evaluated grid."""


def model_combinations(model_config) -> list:
    """The combinations a model is evaluated on: all 15 for the shared-encoder model (one model for every
    subset); for an early-fusion network, the one combination of its input modalities (a ProtoKD student
    is a single-modality network, its teacher a full-modality one)."""
    if model_config.fusion == "shared":
        return list(COMBINATIONS)
    return [tuple(m in model_config.input_modalities for m in MODALITIES)]


@torch.no_grad()
def predict_combinations(model, image, combinations, roi_size, overlap: float = OVERLAP, sw_batch_size: int = 4,
                         device=None) -> torch.Tensor:
    """Logits (K, C, *spatial) of one volume ``image`` (M, *spatial) under each of the K present-masks
    ``combinations``, by MONAI's sliding-window inference (Gaussian blending).

    Every window is encoded once and decoded under every combination (``model.forward_combinations``, where
    the model has it; else one pass per combination), so the 15 combinations of a shared-encoder model cost
    about what six single passes would.
    """

    device = device or next(model.parameters()).device
    image = torch.as_tensor(np.array(image, dtype=np.float32), device=device)[None]  # copy: inputs may be read-only memory maps
    combinations = [tuple(bool(p) for p in np.asarray(c)) for c in combinations]
    was_training = model.training
    model.eval()

    def predictor(window):
        if hasattr(model, "forward_combinations"):
            return model.forward_combinations(window, combinations).flatten(1, 2)  # (B, K·C, *roi)
        n = window.shape[0]  # any model with forward(image, present).logits: one pass per combination
        return torch.cat([model(window, torch.tensor(c, device=window.device).expand(n, -1)).logits
                          for c in combinations], dim=1)

    logits = sliding_window_inference(image, roi_size, sw_batch_size, predictor, overlap=overlap, mode="gaussian")
    model.train(was_training)
    return logits[0].float().cpu().unflatten(0, (len(combinations), -1))


def predict_logits(model, image, present, roi_size, overlap: float = OVERLAP, sw_batch_size: int = 4,
                   device=None) -> torch.Tensor:
    """Logits (C, *spatial) of one volume ``image`` (M, *spatial) given the ``present`` mask (M,)."""
    return predict_combinations(model, image, [present], roi_size, overlap, sw_batch_size, device)[0]


def logits_to_label(logits: torch.Tensor, head: str = "regions") -> np.ndarray:
    """BraTS label map (uint8) from logits (C, *spatial)."""
    if head == "classes":
        return np.asarray(CLASS_LABELS, dtype=np.uint8)[logits.argmax(0).numpy()]
    et, tc, wt = (logits > 0).numpy()  # sigmoid(x) > 0.5  <=>  x > 0
    label = np.zeros(et.shape, dtype=np.uint8)
    label[wt] = 2
    label[tc] = 1
    label[et] = 4
    return label


def region_dice(prediction, truth) -> np.ndarray:
    """Dice per region (ET, TC, WT) between two BraTS label maps, via MONAI; empty vs empty is 1."""

    pred = torch.from_numpy(region_masks(prediction))[None].float()
    true = torch.from_numpy(region_masks(truth))[None].float()
    return compute_dice(pred, true, include_background=True, ignore_empty=False)[0].numpy()


def region_hd95(prediction, truth, spacing=1.0) -> np.ndarray:
    """HD95 in mm per region (ET, TC, WT) between two 3-D BraTS label maps on a grid of ``spacing`` mm (a number
    or one per axis), via MONAI (symmetric: the larger of the two directed 95th percentiles of surface distances).

    BraTS conventions, as for :func:`region_dice`: prediction and truth both empty -> 0; exactly one empty ->
    :data:`BRATS_HD95_PENALTY`.
    """

    pred, true = region_masks(prediction), region_masks(truth)
    if pred.shape != true.shape or pred.ndim != 4:
        raise ValueError(f"region_hd95 needs two 3-D label maps of one shape, got {pred.shape[1:]} and {true.shape[1:]}")
    spacing = _spacing_triple(spacing, "spacing")
    filled_pred, filled_true = pred.any(axis=(1, 2, 3)), true.any(axis=(1, 2, 3))
    hd95 = np.where(filled_pred == filled_true, 0.0, BRATS_HD95_PENALTY)
    both = np.flatnonzero(filled_pred & filled_true)
    if both.size:  # MONAI warns on, and scores inf or nan for, the empty masks handled above
        with warnings.catch_warnings():  # MONAI 1.6 warns about an argument of its own internal call, not of ours
            warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
            hd95[both] = compute_hausdorff_distance(torch.from_numpy(pred[both])[None], torch.from_numpy(true[both])[None],
                                                    include_background=True, percentile=95, spacing=spacing)[0].numpy()
    return hd95


def _spacing_triple(spacing, name: str) -> tuple:
    try:
        values = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if values.ndim > 1 or values.size not in (1, 3) or not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"{name} must be a positive number of mm or three of them (one per axis), got {spacing!r}")
    return tuple(float(v) for v in np.broadcast_to(values.ravel(), (3,)))


def _case_spacing(spacing, case_id) -> tuple:
    if isinstance(spacing, Mapping):
        if case_id not in spacing:
            raise ValueError(f"spacing: no voxel size for case {case_id}")
        return _spacing_triple(spacing[case_id], f"spacing of case {case_id}")
    return _spacing_triple(spacing, "spacing")


def evaluate(model, volumes, roi_size, combinations=None, overlap: float = OVERLAP, sw_batch_size: int = 4,
             progress: bool = True, hd95: bool = False, spacing=1.0):
    """Dice (and optionally HD95) of ``model`` on every case and combination, as a long DataFrame.

    ``volumes``: iterable of ``(case_id, images (4, *spatial), label)``; ``roi_size``: the sliding window,
    which should be the crop the model was trained on (:func:`check_window`); ``combinations``: present-masks,
    by default :func:`model_combinations` (all 15 for the shared-encoder model). Columns: ``case``,
    ``combination`` (e.g. "FLAIR+T1ce"), ``n_present``, ``region``, ``dice``, and with ``hd95=True`` ``hd95``
    (mm, :func:`region_hd95`).

    ``spacing``: the voxel size in mm of the evaluated volumes, which are those of the preprocessing cache: cropped
    and, where the course's ``config.spacing`` is coarser than the case's grid, resampled to it (real BraTS at
    ``config.spacing`` = 2 mm: 2); otherwise the case's own grid (phantoms: their NIfTI spacing, e.g. 3.1 mm for
    size 64). A number or one per axis for every case, or a mapping case id -> spacing
    (:func:`mmkd_helpers.prediction.grid_spacing` gives it). The default, 1 mm, gives HD95 in voxels.
    HD95 is asked for, not given by default: only the caller knows the spacing that makes it mm, and the training
    loop's validation, LCKD's teacher election and the notebooks read only Dice (it adds about 8 % to the inference
    time of a 64³ phantom case).
    """

    volumes = list(volumes)
    head = model.config.head
    combinations = model_combinations(model.config) if combinations is None else list(combinations)
    rows = []
    for case_id, images, label in tqdm(volumes, desc="evaluate", disable=not progress, leave=False):
        if label is None:
            raise ValueError(f"case {case_id}: no label map, so there is nothing to score it against")
        case_spacing = _case_spacing(spacing, case_id) if hd95 else None
        logits = predict_combinations(model, images, combinations, roi_size, overlap, sw_batch_size)
        for present, combination_logits in zip(combinations, logits):
            prediction = logits_to_label(combination_logits, head)
            scores = {"dice": region_dice(prediction, label)}
            if hd95:
                scores["hd95"] = region_hd95(prediction, label, case_spacing)
            for r, region in enumerate(REGION_NAMES):
                rows.append({"case": case_id, "combination": combination_name(present), "n_present": int(sum(present)),
                             "region": region, **{name: float(values[r]) for name, values in scores.items()}})
    return pd.DataFrame(rows)


def check_window(roi_size, trained_roi) -> tuple:
    """The evaluation window, refused unless it is the crop the model was trained on.

    The course's networks normalise every feature map by its own statistics (instance norm), computed over
    the window. A window larger than the training crop holds more healthy brain and background than any
    training crop did, so every normalised feature shifts: a baseline trained on 32³ crops lost 20-60 Dice
    points on 64³ windows (notebook 02 measures it with :func:`window_sensitivity`).
    """
    roi_size, trained_roi = tuple(int(r) for r in roi_size), tuple(int(r) for r in trained_roi)
    if roi_size != trained_roi:
        raise ValueError(f"evaluation window {roi_size} differs from the training crop {trained_roi}: the model's "
                         f"instance-norm statistics would not be those it was trained with; evaluate with {trained_roi}")
    return roi_size


def window_sensitivity(model, volumes, windows, combinations=None, overlap: float = OVERLAP, progress: bool = False):
    """Mean Dice per region for each sliding-window size of ``windows`` (ints or tuples): how much a model's
    score depends on evaluating it at the crop it was trained on. A DataFrame, index = window, columns =
    ET, TC, WT, mean (in %)."""

    rows = {}
    for window in windows:
        roi = tuple(window) if np.ndim(window) else (int(window),) * model.config.spatial_dims
        results = evaluate(model, volumes, roi, combinations, overlap, progress=progress)
        means = results.groupby("region").dice.mean() * 100
        rows["×".join(map(str, roi))] = {**{r: means[r] for r in REGION_NAMES}, "mean": means.mean()}
    return pd.DataFrame(rows).T.rename_axis("window")


def combination_means(results):
    """Mean Dice per (combination, region), combinations in table order: a (15, 3) DataFrame."""
    order = [combination_name(p) for p in COMBINATIONS if combination_name(p) in set(results["combination"])]
    table = results.pivot_table(index="combination", columns="region", values="dice", aggfunc="mean")
    return table.loc[order, [r for r in REGION_NAMES if r in table.columns]]


def dice_table(results: dict, percent: bool = True):
    """A table shaped like Table 1 of the LCKD paper.

    ``results`` maps a method name to the DataFrame of :func:`evaluate`. Rows: the combinations with
    ●/○ marks for FLAIR, T1, T1ce, T2, then an ``Average`` row; columns: (region, method).
    """

    scale = 100.0 if percent else 1.0
    blocks = {name: combination_means(df) * scale for name, df in results.items()}
    table = pd.concat(blocks, axis=1).swaplevel(0, 1, axis=1)
    table = table[[(region, name) for region in REGION_NAMES for name in results if (region, name) in table.columns]]
    table.loc["Average"] = table.mean(axis=0)
    marks = {combination_name(p): combination_marks(p).split() for p in COMBINATIONS}
    for i, modality in enumerate(MODALITY_NAMES):
        table.insert(i, ("", modality), [marks.get(c, [""] * 4)[i] for c in table.index])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def paired_ttest(results_a, results_b, region: str, unit: str = "combination", alternative: str = "greater") -> float:
    """One-tailed paired t-test that method A's Dice is greater than method B's (scipy.stats.ttest_rel).

    ``unit="combination"`` pairs the 15 per-combination mean Dice values, as the p-value row of LCKD's
    Table 1; ``unit="case"`` pairs every (case, combination) value, which has more pairs but treats
    the 15 combinations of one case as independent.
    """

    if unit == "combination":
        a, b = combination_means(results_a)[region], combination_means(results_b)[region]
    elif unit == "case":
        key = ["case", "combination"]
        a = results_a[results_a.region == region].set_index(key)["dice"].sort_index()
        b = results_b[results_b.region == region].set_index(key)["dice"].sort_index()
    else:
        raise ValueError(f"unit must be 'combination' or 'case', got {unit!r}")
    if not a.index.equals(b.index):
        raise ValueError(f"paired_ttest: the two results must cover the same {unit}s (unit={unit!r}) for region "
                         f"{region}; they differ in {len(a.index.symmetric_difference(b.index))} of them")
    return float(ttest_rel(a.to_numpy(), b.to_numpy(), alternative=alternative).pvalue)


VERDICTS = ("better", "worse", "tie")


def compare_seeds(runs: dict, reference: str, combinations=None, alpha: float = 0.05, spread: float | None = None):
    """Each method against ``reference`` over training seeds: the comparison every table of the course states.

    ``runs`` maps a label to a list of :func:`evaluate` tables, one per seed (the same cases in all).
    ``combinations`` (names, e.g. ``["T1"]``) restricts the rows. For every method other than ``reference``
    and every region (and ``mean``, the mean of the three): the mean Dice over cases and combinations for each
    seed, reported as mean and SD over seeds (in %); the ``difference`` of the two means; the ``spread``, the
    larger of the two seed SDs; ``p``, a two-sided paired t-test (scipy) over the cases, each case's Dice averaged
    over its combinations and the seeds; and the ``verdict``: ``better`` or ``worse`` when the difference exceeds
    the seed spread *and* p < ``alpha``, else ``tie`` -- a difference that chance between two runs of the same
    method can produce is not a finding. ``spread`` (points) replaces the measured seed spread, e.g. to judge
    single-seed ablations by the spread of seeded runs of the same recipe.
    """

    def restrict(table):
        table = table if combinations is None else table[table.combination.isin(list(combinations))]
        if table.empty:
            raise ValueError(f"no results for the combinations {combinations}")
        return table.assign(mean=0.0)

    def region_values(table, region):
        if region == "mean":
            return table.groupby(["case", "combination"]).dice.mean()
        return table[table.region == region].set_index(["case", "combination"]).dice

    if reference not in runs:
        raise ValueError(f"reference {reference!r} is not among the runs {list(runs)}")
    rows = []
    for label, tables in runs.items():
        if label == reference:
            continue
        for region in (*REGION_NAMES, "mean"):
            ours = [region_values(restrict(t), region) for t in tables]
            theirs = [region_values(restrict(t), region) for t in runs[reference]]
            seed_means = np.array([100 * v.mean() for v in ours])
            reference_means = np.array([100 * v.mean() for v in theirs])
            per_case = pd.concat(ours, axis=1).mean(axis=1).groupby(level="case").mean()
            per_case_reference = pd.concat(theirs, axis=1).mean(axis=1).groupby(level="case").mean()
            if not per_case.index.equals(per_case_reference.index):
                raise ValueError(f"{label} and {reference} were evaluated on different cases")
            sd = seed_means.std(ddof=1) if len(seed_means) > 1 else float("nan")
            reference_sd = reference_means.std(ddof=1) if len(reference_means) > 1 else float("nan")
            if spread is not None:
                seed_spread = float(spread)
            else:
                seed_spread = np.nanmax([sd, reference_sd]) if len(seed_means) > 1 or len(reference_means) > 1 else 0.0
            difference = seed_means.mean() - reference_means.mean()
            p = float(ttest_rel(per_case.to_numpy(), per_case_reference.to_numpy()).pvalue) if len(per_case) > 1 else float("nan")
            significant = p < alpha
            verdict = ("better" if difference > seed_spread and significant else
                       "worse" if difference < -seed_spread and significant else "tie")
            rows.append({"method": label, "region": region, "mean": seed_means.mean(), "sd": sd,
                         "reference": reference_means.mean(), "reference_sd": reference_sd, "difference": difference,
                         "spread": seed_spread, "p": p, "verdict": verdict, "seeds": len(tables), "cases": len(per_case)})
    return pd.DataFrame(rows)


def describe_comparison(row, reference: str) -> str:
    """One sentence from a row of :func:`compare_seeds`, e.g. "LCKD vs baseline, ET: 45.1 ± 1.2 vs 43.0 ± 0.9
    (3 seeds), +2.1 points, p = 0.03 over 12 cases: a tie (within the seed spread of 2.3)"."""
    spread = f"seed spread {row['spread']:.1f}"
    what = {"better": f"better (beyond the {spread}, p < 0.05)", "worse": f"worse (beyond the {spread}, p < 0.05)",
            "tie": (f"a tie (within the {spread})" if abs(row["difference"]) <= row["spread"]
                    else "a tie (p ≥ 0.05)")}[row["verdict"]]
    sd = lambda v: "" if np.isnan(v) else f" ± {v:.1f}"  # noqa: E731
    seeds = f"{row['seeds']} seed{'s' if row['seeds'] != 1 else ''}"
    region = "mean of ET, TC, WT" if row["region"] == "mean" else row["region"]
    return (f"{row['method']} vs {reference}, {region}: {row['mean']:.1f}{sd(row['sd'])} vs "
            f"{row['reference']:.1f}{sd(row['reference_sd'])} ({seeds}), {row['difference']:+.1f} points, "
            f"p = {row['p']:.2g} over {row['cases']} cases: {what}")


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of the p-values of one family of tests (Holm, S. 1979, "A simple sequentially
    rejective multiple test procedure", Scandinavian Journal of Statistics 6(2), 65-70).

    With the m p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of the i-th smallest is
    max over j <= i of min(1, (m - j + 1) p_(j)): the smallest is multiplied by m, the next by m - 1, and so on,
    never below the one before it. Rejecting where the adjusted p < alpha keeps the chance of any false rejection
    in the family at most alpha, whatever the dependence between the tests. NaN p-values (a test that could not be
    run) stay NaN and do not count in m. Returned in the input's order.
    """

    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm needs a 1-D list of p-values, got shape {p.shape}")
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = np.full(p.shape, np.nan)
    index = np.flatnonzero(finite)
    order = index[np.argsort(p[index], kind="stable")]
    m = len(order)
    factors = m - np.arange(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    return adjusted


def holm_verdicts(comparison, alpha: float = 0.05):
    """Rows of :func:`compare_seeds` (one family of tests, possibly several tables concatenated) with ``p_holm``,
    their p-values adjusted by :func:`holm` across all the rows, and the ``verdict`` given again by the course's
    rule on the adjusted value: ``better`` or ``worse`` only when the difference exceeds the seed spread *and*
    ``p_holm`` < ``alpha``, else ``tie``. ``p`` keeps the unadjusted value."""

    out = comparison.reset_index(drop=True).copy()
    out["p_holm"] = holm(out["p"].to_numpy())
    significant = out["p_holm"] < alpha
    out["verdict"] = np.where(significant & (out["difference"] > out["spread"]), "better",
                              np.where(significant & (out["difference"] < -out["spread"]), "worse", "tie"))
    return out


def cell_comparisons(runs: dict, reference: str):
    """:func:`compare_seeds` once per combination: each method against ``reference`` on every combination the
    reference was evaluated on, per region (and ``mean``), with ``combination`` and ``reference_method`` columns -- the cells of a table
    shaped like LCKD's Table 1, each with its mean and SD over seeds and its paired test over the cases (raw
    ``p``: correct them as one family with :func:`holm_verdicts`)."""

    names = set(pd.concat([t.combination for t in runs[reference]]))
    order = [combination_name(p) for p in COMBINATIONS if combination_name(p) in names]
    return pd.concat([compare_seeds(runs, reference, combinations=[c]).assign(combination=c, reference_method=reference)
                      for c in order], ignore_index=True)


MARKS = {"better": "▲", "worse": "▼", "tie": ""}
"""How :func:`methods_table` marks a verdict: better or worse than the reference (beyond the seed spread and
significant after Holm), nothing for a tie."""


def methods_table(cells, references: Mapping | None = None, decimals: int = 1):
    """Rows of :func:`holm_verdicts` (from :func:`cell_comparisons`, and any summary rows whose ``combination`` is
    a label such as "Average") as a table shaped like LCKD's Table 1: one row per combination (table order, ●/○
    marks for FLAIR, T1, T1ce, T2), then the other labels in their order of appearance; columns (region, method),
    regions ET, TC, WT; cells "mean ± SD" over seeds in %, the SD left out for one seed, followed by ▲ or ▼
    (:data:`MARKS`) where the method beats or loses to its reference beyond the seed spread with p < 0.05 after
    Holm. ``references`` maps the name in a row's ``reference_method`` column (:func:`cell_comparisons` writes
    it) to a column label: the reference's own mean ± SD (the rows' ``reference`` and ``reference_sd``) is then
    shown, unmarked, before the methods compared with it. A method without a value on a row has an empty cell."""

    references = dict(references or {})
    cells = cells[cells.region.isin(REGION_NAMES)]
    if "reference_method" not in cells:
        cells = cells.assign(reference_method=None)

    def text(mean, sd, mark=""):
        spread = "" if pd.isna(sd) else f" ± {sd:.{decimals}f}"
        return f"{mean:.{decimals}f}{spread}{mark}"

    entries, methods = {}, []
    for _, row in cells.iterrows():
        label = references.get(row["reference_method"]) if pd.notna(row["reference_method"]) else None
        if label is not None:
            methods.append(label)
            entries[(row["combination"], row["region"], label)] = text(row["reference"], row["reference_sd"])
        methods.append(row["method"])
        entries[(row["combination"], row["region"], row["method"])] = text(row["mean"], row["sd"],
                                                                          MARKS[row["verdict"]])
    methods = list(dict.fromkeys(methods))
    present = list(dict.fromkeys(cells.combination))
    combos = [combination_name(p) for p in COMBINATIONS]
    rows = [c for c in combos if c in present] + [c for c in present if c not in combos]
    columns = [(region, method) for region in REGION_NAMES for method in methods]
    table = pd.DataFrame([[entries.get((c, region, method), "") for region, method in columns] for c in rows],
                         index=pd.Index(rows, name="combination"), columns=pd.MultiIndex.from_tuples(columns))
    marks = {combination_name(p): combination_marks(p).split() for p in COMBINATIONS}
    for i, modality in enumerate(MODALITY_NAMES):
        table.insert(i, ("", modality), [marks.get(c, [""] * 4)[i] for c in rows])
    return table
