"""Evaluation: full-volume sliding-window inference under each of the 15 modality combinations,
per-case Dice for ET / TC / WT, tables shaped like Table 1 of the LCKD paper, one-tailed paired t-tests.

Conventions (choices recorded here because the papers differ, methods_spec §0 and §8):
* sliding window from MONAI, Gaussian blending, overlap 0.5; logits are blended, then thresholded
  (sigmoid > 0.5 for the region head, argmax for the class head);
* the label map is rebuilt hierarchically as in the LCKD evaluation (WT -> 2, then TC -> 1, then
  ET -> 4), and regions are read off it, so ET is inside TC inside WT;
* Dice of an empty prediction against an empty ground truth is 1 (the BraTS convention); no post-processing.
"""

import numpy as np
import torch

from .constants import CLASS_LABELS, COMBINATIONS, MODALITIES, MODALITY_NAMES, REGION_NAMES, REGIONS, \
    combination_marks, combination_name


def model_combinations(model_config) -> list:
    """The combinations a model is evaluated on: all 15 for the shared-encoder model (one model for every
    subset); for an early-fusion network, the one combination of its input modalities (a ProtoKD student
    is a single-modality network, its teacher a full-modality one)."""
    if model_config.fusion == "shared":
        return list(COMBINATIONS)
    return [tuple(m in model_config.input_modalities for m in MODALITIES)]


@torch.no_grad()
def predict_logits(model, image, present, roi_size, overlap: float = 0.5, sw_batch_size: int = 2,
                   device=None) -> torch.Tensor:
    """Logits (C, *spatial) of one volume ``image`` (M, *spatial) given the ``present`` mask (M,)."""
    from monai.inferers import sliding_window_inference

    device = device or next(model.parameters()).device
    image = torch.as_tensor(np.array(image, dtype=np.float32), device=device)[None]  # copy: inputs may be read-only memory maps
    present = torch.as_tensor(np.asarray(present), dtype=torch.bool, device=device)[None]
    was_training = model.training
    model.eval()

    def predictor(window):
        return model(window, present.expand(window.shape[0], -1)).logits

    logits = sliding_window_inference(image, roi_size, sw_batch_size, predictor, overlap=overlap, mode="gaussian")
    model.train(was_training)
    return logits[0].float().cpu()


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


def region_masks(label) -> np.ndarray:
    """(3, *spatial) bool masks for ET, TC, WT."""
    label = np.asarray(label)
    return np.stack([np.isin(label, values) for values in REGIONS.values()])


def region_dice(prediction, truth) -> np.ndarray:
    """Dice per region (ET, TC, WT) between two BraTS label maps, via MONAI; empty vs empty is 1."""
    from monai.metrics import compute_dice

    pred = torch.from_numpy(region_masks(prediction))[None].float()
    true = torch.from_numpy(region_masks(truth))[None].float()
    return compute_dice(pred, true, include_background=True, ignore_empty=False)[0].numpy()


def evaluate(model, volumes, roi_size, combinations=None, overlap: float = 0.5, sw_batch_size: int = 2,
             progress: bool = True):
    """Dice of ``model`` on every case and combination, as a long DataFrame.

    ``volumes``: iterable of ``(case_id, images (4, *spatial), label)``; ``combinations``: present-masks,
    by default :func:`model_combinations` (all 15 for the shared-encoder model). Columns: ``case``,
    ``combination`` (e.g. "FLAIR+T1ce"), ``n_present``, ``region``, ``dice``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    volumes = list(volumes)
    head = model.config.head
    combinations = model_combinations(model.config) if combinations is None else combinations
    rows = []
    with tqdm(total=len(volumes) * len(combinations), desc="evaluate", disable=not progress, leave=False) as bar:
        for case_id, images, label in volumes:
            for present in combinations:
                logits = predict_logits(model, images, present, roi_size, overlap, sw_batch_size)
                dice = region_dice(logits_to_label(logits, head), label)
                for region, value in zip(REGION_NAMES, dice):
                    rows.append({"case": case_id, "combination": combination_name(present),
                                 "n_present": int(sum(present)), "region": region, "dice": float(value)})
                bar.update(1)
    return pd.DataFrame(rows)


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
    import pandas as pd

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
    from scipy.stats import ttest_rel

    if unit == "combination":
        a, b = combination_means(results_a)[region], combination_means(results_b)[region]
    elif unit == "case":
        key = ["case", "combination"]
        a = results_a[results_a.region == region].set_index(key)["dice"].sort_index()
        b = results_b[results_b.region == region].set_index(key)["dice"].sort_index()
    else:
        raise ValueError(f"unit must be 'combination' or 'case', got {unit!r}")
    assert a.index.equals(b.index), "the two results must cover the same cases and combinations"
    return float(ttest_rel(a.to_numpy(), b.to_numpy(), alternative=alternative).pvalue)


@torch.no_grad()
def latent_features(model, volumes, level: int = 0, max_positions: int | None = None, seed: int = 0,
                    brain_fraction: float = 0.5, device=None) -> torch.Tensor:
    """Per-modality encoder features of whole volumes, all modalities present: (M, C, positions).

    The Z_j that Mind the Gap aligns. Each volume of ``volumes`` (``(case_id, images, label)``) is cut to
    the network's stride and run once in eval mode (a Gaussian latent gives its mean); the features of
    encoder ``level`` (0: the first stage, :class:`~mmkd_helpers.methods.pmix.PMix`'s default Z_j; -1: the
    bottleneck) of every case are concatenated along the positions.

    Only positions whose block of input voxels is at least ``brain_fraction`` brain (non-zero in some
    modality) are kept (0 keeps all): outside the head every modality's input is the same zero volume, so
    whatever tells the modalities apart there is not anatomy but, for one, each volume's own instance-norm
    statistics. With ``max_positions``, that many of the kept positions per case are drawn (seeded,
    the same for every model of the same architecture), so that t-SNE and probes fit a laptop.
    """
    assert model.config.fusion == "shared", "per-modality latents need the shared-encoder model"
    assert 0 <= brain_fraction <= 1, f"brain_fraction must be in [0, 1], got {brain_fraction}"
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    stride = 2 ** (model.config.depth - 1)
    pool = (torch.nn.functional.avg_pool2d, torch.nn.functional.avg_pool3d)[model.config.spatial_dims - 2]
    rng = np.random.default_rng(seed)
    chunks = []
    for _, images, _ in volumes:
        image = torch.as_tensor(np.array(images, dtype=np.float32), device=device)[None]
        image = image[(..., *(slice(0, s - s % stride) for s in image.shape[2:]))]
        features = model(image).features[level][0].float().cpu()  # (M, C, *spatial)
        block = image.shape[2] // features.shape[2]
        brain = pool((image != 0).any(1, keepdim=True).float(), block).cpu().flatten() >= brain_fraction
        features = features.flatten(2)[..., brain]
        if max_positions is not None and features.shape[-1] > max_positions:
            features = features[..., np.sort(rng.choice(features.shape[-1], max_positions, replace=False))]
        chunks.append(features)
    model.train(was_training)
    return torch.cat(chunks, dim=-1)
