"""Looking inside a trained model: is a method's mechanism active?

Dice says how good a prediction is; these functions say why, and whether the pathway a method acts on is
used at all (a correct equation on a dead pathway teaches nothing):

* :func:`feature_reliance` -- the Dice lost when the features of one encoder level are zeroed, and how much
  each modality's features vary across inputs (:func:`feature_variation`); every shipped shared-encoder
  checkpoint records it for the level its method distils;
* :func:`latent_features`, :func:`modality_gap`, :func:`linear_probe_accuracy` -- the per-modality latents
  Mind the Gap aligns, and two numbers for the gap between them (its paper shows only t-SNE pictures);
* :func:`feature_distance` -- LCKD's Eq. 4 pair terms between teacher and student features, with a
  scale-free version;
* :func:`feature_generation_quality` -- MetaKD's Fig. 6: generated vs true features of missing modalities.

The losses these measure live in :mod:`mmkd_helpers.losses`, the scoring in :mod:`mmkd_helpers.evaluation`.
"""

import itertools

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .constants import MODALITY_NAMES
from .dataset import PatchDataset
from .evaluation import OVERLAP, evaluate
from .losses.lckd import cross_modal_kd_loss
from .models import FeatureScaled, fill_missing


# -- does the prediction use a level's features? ---------------------------------------------------------------
def feature_reliance(model, volumes, roi_size, level: int = -1, combinations=None, overlap: float = OVERLAP,
                     n_patches: int = 32, seed: int = 0, intact=None) -> dict:
    """Whether the prediction uses the features at encoder ``level`` (-1: the bottleneck, where LCKD and MetaKD
    distil): the mean Dice (over cases, combinations and regions, in %) with the features intact and with
    them zeroed for every modality (:class:`~mmkd_helpers.models.FeatureScaled`), the ``drop`` between the
    two in points, and ``variation``, each modality's :func:`feature_variation` over ``n_patches`` patches.

    A distillation term on features whose zeroing costs nothing, or that do not vary with the input, acts on
    a dead pathway: it can move the features without moving the prediction. ``intact``: the model's
    :func:`evaluate` table on the same volumes and combinations, if already computed.
    """
    volumes = list(volumes)
    streams = model.config.num_modalities if model.config.fusion == "shared" else 1
    if intact is None:
        intact = evaluate(model, volumes, roi_size, combinations, overlap, progress=False)
    intact = intact.dice.mean() * 100
    zeroed_model = FeatureScaled(model, [0.0] * streams, level)
    zeroed = evaluate(zeroed_model, volumes, roi_size, combinations, overlap, progress=False).dice.mean() * 100
    variation = feature_variation(model, reliance_patches(volumes, roi_size, n_patches, seed), level)
    names = MODALITY_NAMES[:streams] if streams > 1 else ("all",)
    return {"level": level, "dice": float(intact), "dice_zeroed": float(zeroed), "drop": float(intact - zeroed),
            "variation": dict(zip(names, map(float, variation)))}


@torch.no_grad()
def feature_variation(model, patches, level: int = -1, batch_size: int = 4) -> np.ndarray:
    """How much each modality's features at encoder ``level`` vary from one input patch to another, all
    modalities present: per modality, the mean over feature elements of their standard deviation across the
    patches, divided by the mean absolute feature (a coefficient of variation; (M,) array).

    A feature that is (nearly) the same for every input carries no information about it, whatever its size:
    distilling it, or generating it as the mean of others, changes nothing the decoder can use.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features = torch.cat([model(chunk.to(device)).features[level].float().cpu()
                          for chunk in torch.as_tensor(patches).split(batch_size)])  # (P, M, C, *spatial)
    model.train(was_training)
    flat = features.flatten(2)  # (P, M, K)
    spread = flat.std(dim=0).mean(dim=1)
    scale = flat.abs().mean(dim=(0, 2)).clamp_min(1e-12)
    return (spread / scale).numpy()


def reliance_patches(volumes, roi_size, n_patches: int = 32, seed: int = 0, fg_prob: float = 0.5) -> torch.Tensor:
    """(P, M, *roi) training-like patches (a share ``fg_prob`` centred on tumour, the rest anywhere; no
    augmentation, every modality present) drawn from ``volumes`` (``(images, label)`` or
    ``(case_id, images, label)``), seeded."""
    dataset = PatchDataset([v[-2:] for v in volumes], roi_size, fg_prob=fg_prob, flip=False, intensity=0.0,
                           drop_policy="none", seed=seed)
    return torch.stack([dataset[i]["image"] for i in range(n_patches)])


# -- the modality gap (Mind the Gap) --------------------------------------------------------------------------
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
    if model.config.fusion != "shared":
        raise ValueError("latent_features: per-modality latents need the shared-encoder model")
    if not 0 <= brain_fraction <= 1:
        raise ValueError(f"latent_features: brain_fraction must be in [0, 1], got {brain_fraction}")
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


def modality_gap(latents: torch.Tensor, present=None, return_distances: bool = False):
    """A modality-gap figure: mean pairwise centroid distance / mean within-modality spread.

    The paper shows the gap only as t-SNE pictures (Fig. 1, 3); this is a number to put beside them. Every
    (sample, position) of a present modality is one C-dimensional feature vector. Per modality: the
    centroid over its vectors and the spread, the RMS distance of its vectors to that centroid. The gap is
    the mean Euclidean distance between the centroids of all pairs of modalities that have data, divided
    by the mean of their spreads: ≈ 0 for modalities drawn from one distribution, large for separated
    clusters. A zero spread gives 0 if the centroids coincide and ∞ otherwise.

    Returns the gap as a float, and with ``return_distances`` also the (M, M) numpy matrix of centroid
    distances (NaN in the rows and columns of modalities with no present sample).
    """
    if latents.dim() < 3:
        raise ValueError(f"modality_gap: latents must be (N, M, C, *spatial), got shape {tuple(latents.shape)}")
    n, m, c = latents.shape[:3]
    present = torch.ones(n, m, dtype=torch.bool) if present is None else torch.as_tensor(present, dtype=torch.bool)
    if present.shape != (n, m):
        raise ValueError(f"modality_gap: present must be (N, M) = ({n}, {m}), got shape {tuple(present.shape)}")
    present = present.to(latents.device)
    with torch.no_grad():
        x = latents.detach().double().reshape(n, m, c, -1)
        centroids, spreads, used = {}, {}, []
        for j in range(m):
            if not present[:, j].any():
                continue
            vectors = x[present[:, j], j].transpose(1, 2).reshape(-1, c)  # (samples · positions, C)
            centroids[j] = vectors.mean(0)
            spreads[j] = (vectors - centroids[j]).pow(2).sum(1).mean().sqrt().item()
            used.append(j)
    if len(used) < 2:
        raise ValueError(f"modality_gap needs at least two modalities with a present sample, got {len(used)}")
    distances = np.full((m, m), np.nan)
    pair_distances = []
    for a in used:
        for b in used:
            distances[a, b] = (centroids[a] - centroids[b]).norm().item()
            if a < b:
                pair_distances.append(distances[a, b])
    mean_distance = float(np.mean(pair_distances))
    mean_spread = float(np.mean([spreads[j] for j in used]))
    if mean_spread == 0:
        gap = 0.0 if mean_distance == 0 else float("inf")
    else:
        gap = mean_distance / mean_spread
    return (gap, distances) if return_distances else gap


def linear_probe_accuracy(features, labels, seed: int = 0, test_size: float = 0.3) -> float:
    """Held-out accuracy of a logistic-regression probe predicting the modality from a feature vector.

    ``features`` (n, d), ``labels`` (n,) modality indices. A stratified train/test split (``test_size``,
    ``seed``), features standardised on the training part, then scikit-learn's LogisticRegression. Chance
    is 1 / (number of modalities): a well-aligned latent space should be near it, a gapped one near 1.
    """

    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"linear_probe_accuracy: features must be (n, d), got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"linear_probe_accuracy: labels must be (n,) = ({features.shape[0]},), got shape {labels.shape}")
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError("linear_probe_accuracy: a stratified split needs at least two classes with at least two "
                         f"samples each, got counts {counts.tolist()}")
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(x_train, y_train)
    return float(probe.score(x_test, y_test))


# -- LCKD: teacher-student feature distances, for "before and after distillation" figures --------------------
@torch.no_grad()
def feature_distance(model, data, teachers, roi_size=None, n_patches: int = 8, seed: int = 0, batch_size: int = 4):
    """How far each modality's bottleneck feature is from each teacher's, with all modalities given.

    ``data``: a (N, M, *roi) tensor of patches, or a list of volumes from which ``n_patches`` patches of
    ``roi_size`` are drawn (centred on tumour voxels, seeded). Returns a DataFrame with one row per
    (teacher, other modality): ``l1`` = the Eq. 4 pair term with p=1 (mean |f_t - f_s|), ``mse`` = the
    pair term with p=2 (mean (f_t - f_s)^2), ``cosine`` = cosine similarity of the flattened features,
    averaged over patches. LCKD (Wang et al., MICCAI 2023) Eq. 4 should shrink ``l1`` for the students --
    but it can also do so by shrinking every feature, so ``relative_l1`` divides ``l1`` by the features'
    mean magnitude (mean |f_t| and mean |f_s|, averaged): a change of scale leaves it, and ``cosine``, alone.
    """
    if torch.is_tensor(data):
        images = data
    elif roi_size is None:
        raise ValueError("feature_distance: roi_size is needed to draw patches from volumes")
    else:
        images = reliance_patches(data, roi_size, n_patches, seed, fg_prob=1.0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features = torch.cat([model(chunk.to(device)).bottleneck.float().cpu() for chunk in images.split(batch_size)])
    model.train(was_training)
    n, m = features.shape[:2]
    rows = []
    for t in teachers:
        for s in range(m):
            if s == t:
                continue
            pair = torch.zeros(n, m, dtype=torch.bool)
            pair[:, [t, s]] = True
            cosine = torch.nn.functional.cosine_similarity(features[:, t].flatten(1), features[:, s].flatten(1), dim=1)
            l1 = cross_modal_kd_loss(features, pair, [t], p=1).item()
            scale = 0.5 * (features[:, t].abs().mean() + features[:, s].abs().mean()).item()
            rows.append({"teacher": MODALITY_NAMES[t], "student": MODALITY_NAMES[s], "l1": l1,
                         "mse": cross_modal_kd_loss(features, pair, [t], p=2).item(),
                         "relative_l1": l1 / scale if scale > 0 else 0.0, "cosine": cosine.mean().item()})
    return pd.DataFrame(rows)


# -- MetaKD: how good is a generated feature (Fig. 6)? ----------------------------------------------------
def feature_generation_quality(model, images: torch.Tensor, missing=None, per_subset: bool = False):
    """MetaKD Fig. 6: how close the generated feature of a missing modality (Eq. 2, the mean of the
    available ones) is to the feature the modality really has.

    ``images`` (N, M, *spatial) with all modalities present. ``missing``: the subsets to drop, each a
    tuple of modality names or indices (the paper: ``("T1ce",)``, ``("T1ce", "T2")``,
    ``("T1", "T1ce", "T2")``); default every subset of 1 to M−1 modalities. For each subset and each
    missing modality, per sample: the L2 distance ‖f̂ − f‖₂ and the cosine similarity between the
    generated and the true bottleneck feature (flattened over channels and space).

    Returns a DataFrame with columns ``n_missing, l2, cosine``: means over samples, the missing modalities
    of a subset, and the subsets with that many missing. ``per_subset=True`` gives one row per subset
    instead, named in a ``missing`` column.
    """
    n, m = images.shape[:2]
    everything = torch.ones(n, m, dtype=torch.bool, device=images.device)
    with torch.no_grad():
        # The encoder sees each modality alone, so the features of the available modalities are the same
        # whichever others are missing: one pass with all modalities serves every subset.
        true = model.encode(images, everything)[-1].float()
    if missing is None:
        missing = [s for k in range(1, m) for s in itertools.combinations(range(m), k)]
    rows = []
    for subset in missing:
        dropped = [MODALITY_NAMES.index(i) if isinstance(i, str) else int(i) for i in subset]
        present = everything.clone()
        present[:, dropped] = False
        generated = fill_missing(true, present)
        pairs = [(generated[:, i].flatten(1), true[:, i].flatten(1)) for i in dropped]
        rows.append({"missing": "+".join(MODALITY_NAMES[i] for i in dropped), "n_missing": len(dropped),
                     "l2": torch.stack([(g - f).norm(dim=1) for g, f in pairs]).mean().item(),
                     "cosine": torch.stack([torch.cosine_similarity(g, f, dim=1) for g, f in pairs]).mean().item()})
    table = pd.DataFrame(rows)
    return table if per_subset else table.groupby("n_missing", as_index=False)[["l2", "cosine"]].mean()
