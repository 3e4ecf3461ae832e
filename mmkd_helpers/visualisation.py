"""Figures for the notebooks: cases, label overlays, Dice heatmaps, training curves, predictions, t-SNE of latents.

Every function returns the matplotlib Figure (and closes nothing the caller may still want); matplotlib is
imported inside the functions so that importing the package stays cheap.
"""

import numpy as np

from .constants import MODALITY_NAMES, REGION_NAMES

LABEL_COLOURS = {1: (1.0, 0.0, 0.0), 2: (0.0, 0.8, 0.0), 4: (1.0, 1.0, 0.0)}
"""BraTS label -> RGB of its overlay: 1 NCR/NET red, 2 edema green, 4 enhancing tumour yellow (figures and viewer)."""
OVERLAY_ALPHA = 0.45


def label_overlay(label_slice: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """RGBA image (float32) of a 2D BraTS label slice, transparent where the label is 0 or unknown."""
    label_slice = np.asarray(label_slice)
    rgba = np.zeros(label_slice.shape + (4,), dtype=np.float32)
    for value, colour in LABEL_COLOURS.items():
        rgba[label_slice == value] = (*colour, alpha)
    return rgba


def tumour_slice(label: np.ndarray, axis: int = 2) -> int:
    """Index of the slice along ``axis`` with the most tumour voxels (the middle one if there is none)."""
    label = np.asarray(label)
    counts = (label > 0).sum(axis=tuple(a for a in range(label.ndim) if a != axis))
    return int(np.argmax(counts)) if counts.any() else label.shape[axis] // 2


def _show(ax, image2d, label2d=None, title=None):
    ax.imshow(np.asarray(image2d).T, cmap="gray", origin="lower")
    if label2d is not None:
        ax.imshow(label_overlay(np.asarray(label2d)).transpose(1, 0, 2), origin="lower")
    ax.set_title(title or "", fontsize=10)
    ax.axis("off")


def show_case(images, label=None, index=None, axis: int = 2, names=MODALITY_NAMES, overlay: bool = False,
              title: str | None = None):
    """The four modalities of one slice side by side, and the label map (overlaid or as a fifth panel)."""
    import matplotlib.pyplot as plt

    index = tumour_slice(label, axis) if index is None and label is not None else index
    index = images.shape[axis + 1] // 2 if index is None else index
    take = lambda volume: np.take(np.asarray(volume), index, axis=axis)  # noqa: E731
    panels = len(names) + (1 if label is not None and not overlay else 0)
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 2.8))
    for ax, volume, name in zip(axes, images, names):
        _show(ax, take(volume), take(label) if overlay and label is not None else None, name)
    if label is not None and not overlay:
        _show(axes[-1], np.zeros_like(take(label), dtype=float), take(label), "label (red 1, green 2, yellow 4)")
    fig.suptitle(title or f"slice {index}", fontsize=11)
    fig.tight_layout()
    return fig


def dice_heatmap(table, title: str = "Dice (%)"):
    """Heatmap of a :func:`mmkd_helpers.evaluation.dice_table` (combinations x region/method)."""
    import matplotlib.pyplot as plt

    values = table[[c for c in table.columns if c[0] in REGION_NAMES]].astype(float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * values.shape[1], 0.32 * len(values) + 1.2))
    image = ax.imshow(values.to_numpy(), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(values.shape[1]), [" ".join(c).strip() for c in values.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(values)), values.index)
    for (i, j), v in np.ndenumerate(values.to_numpy()):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_history(history, columns=("loss",), smooth: int = 20, title: str = "training"):
    """Training curves from the engine's history DataFrame, with a running mean over ``smooth`` steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for column in columns:
        if column in history:
            ax.plot(history["step"], history[column], alpha=0.25)
            ax.plot(history["step"], history[column].rolling(smooth, min_periods=1).mean(), label=column)
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def show_predictions(image_slice, truth_slice, predictions: dict, title: str = ""):
    """One background slice, the ground truth and several predicted label slices side by side."""
    import matplotlib.pyplot as plt

    panels = 1 + len(predictions)
    fig, axes = plt.subplots(1, panels, figsize=(2.8 * panels, 3))
    _show(axes[0], image_slice, truth_slice, "ground truth")
    for ax, (name, predicted) in zip(axes[1:], predictions.items()):
        _show(ax, image_slice, predicted, name)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def tsne_2d(features, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """A 2-D t-SNE embedding (scikit-learn, PCA initialisation) of ``features`` (n, d)."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    if len(features) < 2 or not np.ptp(features, axis=0).any():
        # scikit-learn's PCA initialisation divides by a zero spread and its Barnes-Hut tree then crashes
        raise ValueError(f"t-SNE needs at least two distinct feature vectors; all {len(features)} are identical "
                         "(a layer switched off in training?)")
    perplexity = min(perplexity, (len(features) - 1) / 3)  # scikit-learn needs perplexity < n
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_by_modality(ax, embedding, modality_index, title: str = "", names=MODALITY_NAMES):
    """Scatter a 2-D embedding, one colour per modality (Mind the Gap's Fig. 1)."""
    modality_index = np.asarray(modality_index)
    for j, name in enumerate(names):
        points = embedding[modality_index == j]
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_calibration(ours, real, labels=("phantom", "real")):
    """Two :func:`mmkd_helpers.calibration.summarise` tables side by side, mean ± SD over cases: per region,
    the volume fraction of the brain (left) and each modality's voxel-wise AUC against the rest of the brain
    and, for ET and TC, against the rest of the tumour (right)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 3]})
    tables = [t.set_index(["region", "statistic"]) for t in (ours, real)]
    for shift, (table, label) in zip((-0.15, 0.15), zip(tables, labels)):
        for ax, keys in ((left, [(r, "fraction") for r in REGION_NAMES]),
                         (right, [(r, f"{kind}auc_{m}") for kind in ("", "tumour_") for r in REGION_NAMES
                                  for m in MODALITY_NAMES if (r, f"{kind}auc_{m}") in table.index])):
            keys = [k for k in keys if k in tables[1].index]
            x = np.arange(len(keys)) + shift
            ax.errorbar(x, table.loc[keys, "mean"], yerr=table.loc[keys, "sd"], fmt="o", capsize=2, label=label)
            names = [r if s == "fraction" else f"{r}/WT\n{s[len('tumour_auc_'):]}" if s.startswith("tumour_")
                     else f"{r}\n{s[len('auc_'):]}" for r, s in keys]
            ax.set_xticks(np.arange(len(keys)), names, fontsize=7)
    left.set_title("volume fraction of the brain")
    right.set_title("voxel-wise AUC of each modality against the rest of the brain, and (ET/WT, TC/WT) against the "
                    "rest of the tumour; 0.5: no information", fontsize=9)
    right.axhline(0.5, color="grey", lw=0.5)
    left.legend()
    fig.tight_layout()
    return fig
