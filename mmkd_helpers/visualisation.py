"""Figures for the notebooks: the course style and colours, cases, label overlays, Dice heatmaps and distributions,
training curves, predictions, t-SNE of latents.

One look across the course: every notebook calls :func:`course_style` once (seaborn's theme, the colour-blind
palette) and colours a modality, a region or a method the same way everywhere (:data:`MODALITY_COLOURS`,
:data:`REGION_COLOURS`, :data:`METHOD_COLOURS`). Statistical figures (distributions over cases and seeds,
heatmaps, comparisons with confidence intervals) are drawn with seaborn.

Every function returns the matplotlib Figure (and closes nothing the caller may still want); matplotlib and
seaborn are imported inside the functions so that importing the package stays cheap.
"""

import numpy as np

from .constants import MODALITY_NAMES, REGION_NAMES

LABEL_COLOURS = {1: (1.0, 0.0, 0.0), 2: (0.0, 0.8, 0.0), 4: (1.0, 1.0, 0.0)}
"""BraTS label -> RGB of its overlay: 1 NCR/NET red, 2 edema green, 4 enhancing tumour yellow (figures and viewer)."""
LABEL_NAMES = {1: "NCR/NET (1)", 2: "edema (2)", 4: "enhancing (4)"}
OVERLAY_ALPHA = 0.45

# seaborn's "colorblind" palette (Okabe-Ito-like), as RGB, fixed here so that colours do not depend on seaborn's
# version and every notebook draws FLAIR, ET or LCKD-m in the same colour.
_COLORBLIND = [(0.004, 0.451, 0.698), (0.871, 0.561, 0.020), (0.008, 0.620, 0.451), (0.835, 0.369, 0.0),
               (0.800, 0.471, 0.737), (0.792, 0.569, 0.380), (0.984, 0.686, 0.894), (0.580, 0.580, 0.580),
               (0.925, 0.882, 0.200), (0.337, 0.706, 0.914)]
MODALITY_COLOURS = dict(zip(MODALITY_NAMES, _COLORBLIND[:4]))
"""Modality name -> RGB, the same in every figure of the course (t-SNE clouds, per-modality curves, IWV)."""
REGION_COLOURS = dict(zip(REGION_NAMES, [_COLORBLIND[8], _COLORBLIND[4], _COLORBLIND[2]]))
"""Region (ET, TC, WT) -> RGB."""
METHOD_COLOURS = {"baseline": _COLORBLIND[7], "LCKD-m": _COLORBLIND[0], "LCKD-s": _COLORBLIND[9],
                  "MetaKD": _COLORBLIND[1], "MetaKD bi-level": _COLORBLIND[5], "ProtoKD": _COLORBLIND[2],
                  "Mind the Gap": _COLORBLIND[4], "unimodal": _COLORBLIND[3], "teacher": (0.2, 0.2, 0.2)}
"""Method label (as the notebooks' tables name them) -> RGB; :func:`method_colour` for labels not listed."""


def method_colour(label: str):
    """The course colour of a method label; a label that starts with a known one (``"LCKD-m (α = 0.1)"``) takes its
    colour, any other a fixed grey."""
    for name in sorted(METHOD_COLOURS, key=len, reverse=True):
        if str(label).startswith(name):
            return METHOD_COLOURS[name]
    return (0.4, 0.4, 0.4)


def course_style() -> None:
    """The course's look for every figure that follows: seaborn's ``whitegrid`` theme at ``notebook`` scale, the
    colour-blind palette, titles and labels sized to stay apart. Every notebook calls it in its imports cell."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=_COLORBLIND,
                  rc={"figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": 11, "axes.labelsize": 10,
                      "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 12,
                      "image.cmap": "viridis"})


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


def dice_heatmap(table, title: str = "Dice (%)", ax=None):
    """Heatmap (seaborn, annotated, with a colour bar in %) of a :func:`mmkd_helpers.evaluation.dice_table`
    (combinations x region/method)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    values = table[[c for c in table.columns if c[0] in REGION_NAMES]].astype(float)
    values.columns = [" ".join(map(str, c)).strip() for c in values.columns]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 0.9 * values.shape[1], 0.32 * len(values) + 1.4))
    sns.heatmap(values, ax=ax, cmap="viridis", vmin=0, vmax=100, annot=True, fmt=".0f", annot_kws={"fontsize": 7},
                cbar_kws={"label": "Dice (%)", "fraction": 0.05})
    ax.set_xlabel("region")
    ax.set_ylabel("available modalities")
    ax.tick_params(axis="x", rotation=45)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def plot_history(history, columns=("loss",), smooth: int = 20, title: str = "training", ylabel: str = "loss"):
    """Training curves from the engine's history DataFrame, with a running mean over ``smooth`` steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for column in columns:
        if column in history:
            line, = ax.plot(history["step"], history[column].rolling(smooth, min_periods=1).mean(), label=column)
            ax.plot(history["step"], history[column], alpha=0.25, color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.legend(title=f"running mean of {smooth} steps")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def tumour_box(*label_slices, margin: int = 6):
    """``(slice, slice)`` of the 2-D bounding box of label > 0 over all ``label_slices``, widened by ``margin``
    pixels and kept inside the image; the whole image when no slice holds tumour."""
    mask = np.zeros(np.asarray(label_slices[0]).shape, dtype=bool)
    for label_slice in label_slices:
        mask |= np.asarray(label_slice) > 0
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis in range(2):
        hits = np.flatnonzero(mask.any(axis=1 - axis))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def whole_tumour_dice(predicted, truth) -> float:
    """Dice of label > 0 on one slice, in %; 100 when both are empty (the panel titles of :func:`show_predictions`)."""
    predicted, truth = np.asarray(predicted) > 0, np.asarray(truth) > 0
    total = predicted.sum() + truth.sum()
    return 100.0 if total == 0 else float(200.0 * (predicted & truth).sum() / total)


def label_legend(ax_or_fig, **kwargs):
    """A legend of the three BraTS label colours (NCR/NET, edema, enhancing) on an Axes or a Figure."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=LABEL_COLOURS[v], alpha=0.8, label=name) for v, name in LABEL_NAMES.items()]
    return ax_or_fig.legend(handles=handles, **kwargs)


def show_predictions(image_slice, truth_slice, predictions: dict, title: str = "", zoom: bool = True,
                     pyplot: bool = True):
    """One background slice with the ground truth, and each predicted label slice beside it, titled with its Dice
    of the whole tumour on this slice; a legend of the label colours; ``zoom`` crops every panel to the tumour
    (of the truth and of every prediction) with a margin. ``pyplot=False`` draws on a bare Figure (widgets)."""
    if pyplot:
        import matplotlib.pyplot as plt

        panels = 1 + len(predictions)
        fig, axes = plt.subplots(1, panels, figsize=(2.8 * panels, 3.3))
    else:
        from matplotlib.figure import Figure

        panels = 1 + len(predictions)
        fig = Figure(figsize=(2.8 * panels, 3.3))
        axes = fig.subplots(1, panels)
    axes = np.atleast_1d(axes)
    box = tumour_box(truth_slice, *predictions.values()) if zoom else (slice(None), slice(None))
    crop = lambda a: np.asarray(a)[box]  # noqa: E731
    _show(axes[0], crop(image_slice), crop(truth_slice), "ground truth")
    for ax, (name, predicted) in zip(axes[1:], predictions.items()):
        _show(ax, crop(image_slice), crop(predicted), f"{name}\nWT Dice {whole_tumour_dice(predicted, truth_slice):.0f} % (slice)")
    label_legend(fig, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title + (" (zoomed on the tumour)" if zoom else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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
    """Scatter a 2-D embedding, one course colour per modality (Mind the Gap's Fig. 1); t-SNE axes have no units,
    so they are labelled as such and carry no ticks."""
    modality_index = np.asarray(modality_index)
    for j, name in enumerate(names):
        points = embedding[modality_index == j]
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, label=name,
                   color=MODALITY_COLOURS.get(name, None))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("t-SNE 1 (no unit)")
    ax.set_ylabel("t-SNE 2 (no unit)")
    ax.set_xticks([])
    ax.set_yticks([])


def dice_distribution(results, x: str = "combination", hue: str | None = "method", region: str = "WT",
                      title: str | None = None, ax=None):
    """Box plot with the points over it (seaborn) of per-case Dice (%) for one region: ``results`` is a long
    DataFrame with a ``region`` column (or a column named as the region) and a ``dice`` column in [0, 1] or %.
    One box per ``x`` value (and ``hue``), every case a dot: the spread a mean hides."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = results[results["region"] == region] if "region" in results else results
    values = frame["dice"].astype(float)
    frame = frame.assign(dice_percent=values * (100.0 if values.max() <= 1.0 else 1.0))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.55 * frame[x].nunique() * (frame[hue].nunique() if hue else 1)), 3.6))
    palette = {h: method_colour(h) for h in frame[hue].unique()} if hue == "method" else None
    sns.boxplot(frame, x=x, y="dice_percent", hue=hue, ax=ax, showfliers=False, palette=palette,
                boxprops={"alpha": 0.5})
    sns.stripplot(frame, x=x, y="dice_percent", hue=hue, ax=ax, dodge=hue is not None, size=2.5, palette=palette,
                  legend=False)
    ax.set_ylabel(f"{region} Dice (%)")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylim(-2, 102)
    ax.tick_params(axis="x", rotation=45)
    ax.set_title(title or f"{region} Dice per case")
    ax.figure.tight_layout()
    return ax.figure


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


def embedding_figure(embedding, modality_index, title: str = "", highlight: str | None = None, distances=None,
                     distance_limit: float | None = None, names=MODALITY_NAMES):
    """A 2-D embedding of per-modality latents beside a measurement the picture cannot show, made without pyplot
    (for :func:`mmkd_helpers.widgets.interactive_figure`).

    Left: ``embedding`` (n, 2) drawn by :func:`plot_by_modality` in the course colours; with ``highlight`` (a name
    of ``names``) that modality's cloud is drawn on top and the others faded. Right, when ``distances`` is given
    ({modality name: value}, e.g. each centroid's distance to the highlighted modality's in the latent space, in
    units of the spread within a modality): one bar per modality in its colour, on a fixed axis from 0 to
    ``distance_limit`` (when given) so that pictures of different models can be compared. Returns the Figure."""
    from matplotlib.figure import Figure

    if highlight is not None and highlight not in names:
        raise ValueError(f"highlight must be one of {list(names)}, got {highlight!r}")
    fig = Figure(figsize=(8.0, 3.8) if distances is not None else (4.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[3, 2]) if distances is not None else [fig.subplots()]
    plot_by_modality(axes[0], embedding, modality_index, title, names=names)
    if highlight is not None:
        for name, cloud in zip(names, axes[0].collections):
            on_top = name == highlight
            cloud.set_alpha(0.9 if on_top else 0.25)
            cloud.set_sizes([9.0 if on_top else 3.0])
            cloud.set_zorder(3 if on_top else 2)
    axes[0].legend(markerscale=3, loc="best", fontsize=8)
    if distances is not None:
        shown = [name for name in names if name in distances]
        axes[1].bar(shown, [distances[name] for name in shown], color=[MODALITY_COLOURS.get(n) for n in shown])
        reference = f"to {highlight}'s" if highlight is not None else "between"
        axes[1].set_ylabel(f"centroid distance {reference}\n(÷ mean spread within a modality)")
        axes[1].set_xlabel("modality")
        axes[1].set_title("measured in the latent space", fontsize=10)
        if distance_limit is not None:
            axes[1].set_ylim(0, distance_limit)
    return fig
