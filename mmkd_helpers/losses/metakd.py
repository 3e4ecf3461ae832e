"""MetaKD losses: the importance weight vector (IWV) and the modality-weighted pairwise distillation.

MetaKD (Wang et al., arXiv 2405.07155) learns one raw weight per modality; its normalised value w_i says
how much knowledge modality i holds, and the distillation between every ordered pair of available
modalities is weighted by the ratio w_i / w_j (Eq. 4), so the features move toward the modalities with
large weights. Where the released code differs from the paper, the code's choice is the default and the
paper's is an option.
"""

import torch

IWV_NORMALISATIONS = ("softmax", "relu", "sigmoid")


def normalise_iwv(raw: torch.Tensor, kind: str = "softmax", eps: float = 1e-6) -> torch.Tensor:
    """The normalised importance weight vector from the raw one, over the last dimension.

    * ``"softmax"``: MetaKD Eq. 6, w_i = exp(w_i) / Σ_j exp(w_j): the paper's and the code's choice.
    * ``"relu"`` and ``"sigmoid"``: the paper's normalisation ablation (supplementary Table 6). The paper
      does not say how they are scaled; here the element-wise ReLU or sigmoid is divided by its sum, so
      every variant sums to 1 and the meta step's feature scaling f_i·w_i (Eq. 4) keeps the same overall
      scale -- the ablation then compares only the shape of the normalisation. A ReLU weight is floored
      at ``eps`` so that every ratio w_i / w_j of Eq. 4 stays finite; a weight that ReLU kills gets no
      gradient again and its modality's pairs as a student weigh up to 1/eps, the instability that the
      paper's argument for softmax points at.
    """
    if kind == "softmax":
        return torch.softmax(raw, dim=-1)
    if kind == "relu":
        weights = raw.clamp_min(eps)
    elif kind == "sigmoid":
        weights = torch.sigmoid(raw)
    else:
        raise ValueError(f"unknown IWV normalisation {kind!r}; choose from {IWV_NORMALISATIONS}")
    return weights / weights.sum(dim=-1, keepdim=True)


def pair_distances(features: torch.Tensor, p: int = 1, detach_teacher: bool = True) -> torch.Tensor:
    """d_ij(n) = mean over (c, x) of |f_i(n) − f_j(n)|^p for every ordered pair: (N, M, M), index [n, i, j].

    MetaKD Eq. 5 without the presence factors. i is the "teacher", stop-gradient when ``detach_teacher``
    (the code). p = 1 is the code's mean absolute error; p = 2 is the paper's "L2 (MSE)" variant of
    Fig. 3. Both are the p-th power of the p-norm divided by the number of elements, as the code does,
    so the loss does not grow with the feature size.
    """
    flat = features.flatten(2)  # (N, M, K)
    teacher = flat.detach() if detach_teacher else flat
    return (teacher[:, :, None] - flat[:, None, :]).abs().pow(p).mean(dim=-1)


def weighted_kd_loss(features: torch.Tensor, present: torch.Tensor, weights: torch.Tensor, p: int = 1,
                     detach_ratio: bool = True, detach_teacher: bool = True) -> torch.Tensor:
    """The modality-weighted distillation term of MetaKD Eq. 4 with Eq. 5 inside:

        L_kd = mean_n Σ_{i≠j, δ_i(n) δ_j(n)} (w_i / w_j) · d_ij(n)

    ``features`` (N, M, C, *spatial) per-modality encoder features *before* missing-feature filling;
    ``present`` (N, M) bool, the δ(x ≠ ∅) of Eq. 5 per sample; ``weights`` (M,) or (N, M) the normalised
    IWV (positive). Both directions of every available pair are included, so f_j moves toward f_i with
    weight w_i / w_j and f_i toward f_j with weight w_j / w_i; i = j is left out (a zero term). The sum
    over pairs and the mean over the batch follow the code.

    ``detach_ratio=True`` is the code: the ratio is a constant and the IWV gets no gradient from the
    training loss. ``False`` keeps it differentiable, which the bi-level form of Eq. 4 needs (the inner
    step's dependence on w).
    """
    ratio = weights[..., :, None] / weights[..., None, :]  # [.., i, j] = w_i / w_j
    if detach_ratio:
        ratio = ratio.detach()
    present = present.bool()
    eye = torch.eye(present.shape[1], dtype=torch.bool, device=present.device)
    pairs = present[:, :, None] & present[:, None, :] & ~eye  # (N, M, M): both available, i ≠ j
    distances = pair_distances(features, p, detach_teacher)
    return (ratio * distances * pairs).sum(dim=(1, 2)).mean()
