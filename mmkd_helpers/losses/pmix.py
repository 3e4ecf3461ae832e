"""Mind the Gap (Tianyi Liu et al., arXiv 2409.19366): latent alignment of every modality to an anchor P_mix.

The teacher encodes each modality into a shared latent space and aligns each Z_j to an anchor (Sec. III-B,
the objective of Eq. 7). Three anchors are compared in Table IV:

* P^N_mix = N(0, 1), :func:`pmix_normal_loss` -- a VAE-style KL of each modality's predicted Gaussian to
  the standard normal (:func:`gaussian_kl_standard_normal`, sampled with :func:`reparameterise`).
* P^k_mix = P(Z_k), :func:`pmix_modality_loss` -- MSE of every other modality's latent to a chosen
  modality k (T1ce is the paper's choice, Table V).
* P*_mix, :func:`pmix_mixture_loss` -- learnable weights over the modalities (:func:`pmix_weights`), either
  the paper's Σ_j w_j ‖Z_j − Z_k‖² or the released draft's pull of every Z_m to the mixture Σ_j w_j Z_j.

The only released code (T-Y-Liu/MedMAP, ``MedMAP.py``) is a draft of the anchor, not a pipeline, and it
disagrees with the paper and with itself: its P^N term is not a KL, its weights are
overwritten by a plain normalisation (v1) or computed from all four modalities including missing ones with
the batch mask of sample 0 (v2), and P^k is absent. Here the paper is followed where it is well defined,
the draft's mixture form is an option, and the draft's bugs are not copied (each function says which).

Inputs are per-modality latents ``(N, M, C, *spatial)`` in the canonical order FLAIR, T1, T1ce, T2
(:data:`mmkd_helpers.constants.MODALITIES`) and an optional ``present`` (N, M) bool mask: an absent
modality is left out of every term of its sample, and a sample with fewer than two present modalities
adds nothing to a pairwise term. Every MSE is the mean over elements, so the losses do not grow with the
feature size (as in the draft and the MetaKD code).

:func:`mmkd_helpers.analysis.modality_gap` and :func:`~mmkd_helpers.analysis.linear_probe_accuracy` measure the
gap these losses are meant to close.
"""

import torch

from ..constants import MODALITIES

PMIX_FORMS = ("paper", "code")

PAPER_REPORTED_WEIGHTS = {"flair": 0.3055, "t1": 0.7759, "t1ce": 2.2055, "t2": 0.8977}
"""The learned P*_mix weights printed in the paper (Sec. IV-C, listed there as T1, T2, T1ce, FLAIR)."""


def _present_mask(present, latents: torch.Tensor) -> torch.Tensor:
    """The (N, M) bool mask, all True by default, checked against the latents' first two dimensions."""
    if latents.dim() < 3:
        raise ValueError(f"latents must be (N, M, C, *spatial), got shape {tuple(latents.shape)}")
    if present is None:
        return torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)
    present = torch.as_tensor(present, device=latents.device).bool()
    if present.shape != latents.shape[:2]:
        raise ValueError(f"present must be (N, M) = {tuple(latents.shape[:2])}, got {tuple(present.shape)}")
    return present


def _masked_mean(values: torch.Tensor, keep: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``keep``; 0 with a gradient path through ``anchor`` when nothing is kept."""
    if not keep.any():
        return anchor.sum() * 0.0
    # where, not a product: an absent modality's latent may hold anything (zeros, NaN fill) and must not leak
    return torch.where(keep, values, torch.zeros_like(values)).sum() / keep.sum()


def _check_anchor(anchor, num_modalities: int) -> int:
    message = f"anchor must be a modality index in [0, {num_modalities}) (canonical order {MODALITIES}), got {anchor!r}"
    if not isinstance(anchor, int):
        raise TypeError(message)
    if not 0 <= anchor < num_modalities:
        raise ValueError(message)
    return anchor


# -- P^N_mix: KL to the standard normal --------------------------------------------------------------------
def gaussian_kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − log σ² − 1), element-wise, then the mean over all elements.

    The P^N_mix objective of Sec. III-B, written correctly; ``logvar`` is log σ². The reduction is the mean
    over every element (a VAE usually sums over latent dimensions); the mean keeps the term on the same
    scale as the MSE anchors whatever the feature size.

    Neither printed form is this KL:

    * The paper prints E[2 log 1/v + v² + mean²/2 − 1/2]. Reading v as the standard deviation σ, that is
      −log σ² + σ² + μ²/2 − 1/2 = 2·KL − μ²/2 + 1/2: the σ terms are doubled relative to the mean and the
      constant, so it weighs the variance twice as hard and is 1/2, not 0, at N(0, 1). Reading v as the
      variance (as the text says) gives −2 log σ² + σ⁴ + ..., not the KL either.
    * The draft code (v1 ``align_pNmix``) computes mean[(μ − Z)² / v + v] / 2 with v the *log*-variance:
      the log term is missing and a log-variance is used as a variance, so it is neither this KL nor a
      Gaussian NLL (and it is unbounded below for v < 0).
    """
    return _gaussian_kl(mean, logvar).mean()


def _gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The element-wise KL of :func:`gaussian_kl_standard_normal`, before any reduction."""
    if mean.shape != logvar.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ in shape")
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0)


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample Z = μ + exp(½ log σ²) · ε, ε ~ N(0, 1): the VAE reparameterisation the paper's P^N_mix cites.

    Differentiable in ``mean`` and ``logvar``; ``generator`` makes ε reproducible.
    """
    if mean.shape != logvar.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ in shape")
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * logvar) * eps


def pmix_normal_loss(means: torch.Tensor, logvars: torch.Tensor, present=None) -> torch.Tensor:
    """P^N_mix (Sec. III-B): KL of every present modality's Gaussian to N(0, 1), averaged over them.

    ``means`` and ``logvars`` (N, M, C, *spatial) are the heads' μ_j and log σ_j². Per (sample, modality)
    the KL is :func:`gaussian_kl_standard_normal` (mean over elements); the loss is the mean over present
    (sample, modality) pairs. Absent modalities are excluded, unlike the draft, which divides by 4 always.
    Returns 0 (with a gradient path) when nothing is present.
    """
    if means.shape != logvars.shape:
        raise ValueError(f"means {tuple(means.shape)} and logvars {tuple(logvars.shape)} differ in shape")
    present = _present_mask(present, means)
    kl = _gaussian_kl(means, logvars).flatten(2).mean(-1)  # (N, M)
    return _masked_mean(kl, present, means)


# -- P^k_mix: one modality as the anchor -------------------------------------------------------------------
def pmix_modality_loss(latents: torch.Tensor, anchor: int, present=None, detach_anchor: bool = True) -> torch.Tensor:
    """P^k_mix (Sec. III-B): E‖Z_j − Z_k‖² for every present j ≠ k of the samples where k is present.

    ``anchor`` is k, an index in the canonical order (T1ce = 2 is the paper's choice, Table V). Each pair's
    term is the MSE over elements; the loss is the mean over the (sample, j) pairs that count. Returns 0
    (with a gradient path) when no pair counts. Not in the released code.

    ``detach_anchor`` (the paper leaves it open): True by default, because
    otherwise Z_k is pulled toward the other modalities as much as they are pulled toward it, and the
    anchor stops being the chosen modality's distribution -- the loss then aligns to the pair's midpoint.
    """
    present = _present_mask(present, latents)
    k = _check_anchor(anchor, latents.shape[1])
    flat = latents.flatten(2)  # (N, M, K)
    target = flat[:, k].detach() if detach_anchor else flat[:, k]
    mse = (flat - target[:, None]).pow(2).mean(-1)  # (N, M)
    pairs = present & present[:, k:k + 1]
    pairs[:, k] = False
    return _masked_mean(mse, pairs, latents)


# -- P*_mix: learnable weights -----------------------------------------------------------------------------
def pmix_weights(raw: torch.Tensor) -> torch.Tensor:
    """The P*_mix weights: the softmax of the raw learnable vector over its last (modality) dimension.

    Softmax is the "learnable softmax weights" of the issue and the v2 draft's choice; the v1 draft
    computes a softmax and then overwrites it with w / Σ w, which can be negative or blow up when Σ w → 0.
    The result is positive and sums to 1.

    The weights the paper reports (:func:`paper_reported_weights`; FLAIR 0.3055, T1 0.7759, T1ce 2.2055,
    T2 0.8977) are not softmax outputs: they sum to 4.1846. They are presumably the raw parameters; their
    softmax would be about (0.090, 0.144, 0.603, 0.163) and w / Σ w about (0.073, 0.185, 0.527, 0.215),
    T1ce the largest either way -- an interpretation, not something the paper states.
    """
    return torch.softmax(raw, dim=-1)


def paper_reported_weights() -> dict:
    """The paper's reported learned P*_mix weights (Sec. IV-C), keyed by canonical modality name in
    canonical order. These are the paper's numbers, not normalised weights (see :func:`pmix_weights`)."""
    return {name: PAPER_REPORTED_WEIGHTS[name] for name in MODALITIES}


def pmix_mixture_loss(latents: torch.Tensor, weights: torch.Tensor, form: str = "paper", anchor: int | None = None,
                      present=None, detach_target: bool = True) -> torch.Tensor:
    """P*_mix (Sec. III-B, "Adaptive Alignment") in the paper's form or the released draft's.

    ``weights`` (M,) or (N, M), non-negative, normally :func:`pmix_weights` of a learnable vector.
    ``detach_target`` stops the gradient through the *features* of the target (Z_k, or the Z_j inside the
    mixture), never through the weights, so the weights still learn from this loss (the v1 draft detaches
    the features in the mixture; v2 does not).

    * ``form="paper"``: Σ_j w_j ‖Z_j − Z_k‖², with ``anchor`` = k. Per sample where k and at least one
      other modality are present: the MSE of each present Z_j to Z_k, weighted by w_j and summed over
      present j (weights not renormalised; j = k adds 0); then the mean over those samples.
    * ``form="code"``: the draft's pull of every present Z_m to the mixture P = Σ_j w̃_j Z_j, with
      w̃ = w renormalised over the sample's present modalities; the per-sample loss is the mean over
      present m of MSE(Z_m, P), then the mean over samples with at least two present modalities. This
      follows the draft's inference rule (renormalised over available modalities). Its training rule
      mixes all four modalities, missing ones included, with the mask of sample 0 for the whole batch:
      neither is copied -- masks are per sample and missing features never
      enter P. The draft's fixed /4 (v1) or /8 (v2) becomes a mean over present modalities.

    Degenerate solution of the paper form: ∂L/∂w_j = ‖Z_j − Z_k‖² ≥ 0 and the anchor's own term is 0, so
    if the weights are learned by gradient on this loss alone they only shrink: raw unconstrained weights
    go to 0 (and below, the loss is then unbounded below), w / Σ w is unstable; softmax prevents collapse to
    zero but moves all mass onto w_k, where the loss is 0 without aligning anything. The weights must be
    shaped by another signal (the segmentation loss through the features, or a separate update). In the
    code form the alignment loss alone pulls the mixture toward the plain mean of the modalities, i.e. the
    weights toward uniform -- not a collapse, but again not the informative weights the paper reports.

    Returns 0 (with a gradient path) when no sample counts.
    """
    if form not in PMIX_FORMS:
        raise ValueError(f"form must be one of {PMIX_FORMS}, got {form!r}")
    present = _present_mask(present, latents)
    n, m = latents.shape[:2]
    if tuple(weights.shape) not in ((m,), (n, m)):
        raise ValueError(f"weights must be (M,) = ({m},) or (N, M) = ({n}, {m}), got {tuple(weights.shape)}")
    if not bool((weights.detach() >= 0).all()):
        raise ValueError("weights must be non-negative: pass pmix_weights(raw), not raw")
    weights = weights.expand(n, m)
    flat = latents.flatten(2)  # (N, M, K)
    count = present.sum(1)

    if form == "paper":
        if anchor is None:
            raise ValueError("form='paper' needs the anchor modality k (Σ_j w_j ‖Z_j − Z_k‖²)")
        k = _check_anchor(anchor, m)
        target = flat[:, k].detach() if detach_target else flat[:, k]
        mse = (flat - target[:, None]).pow(2).mean(-1)  # (N, M)
        per_sample = torch.where(present, weights * mse, torch.zeros_like(mse)).sum(1)
        keep = present[:, k] & (count >= 2)
    else:
        if anchor is not None:
            raise ValueError(f"form='code' pulls every modality to the weighted mixture and takes no anchor, got anchor={anchor!r}")
        w = torch.where(present, weights, torch.zeros_like(weights))
        w = w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        features = flat.detach() if detach_target else flat
        features = torch.where(present[..., None], features, torch.zeros_like(features))
        mixture = torch.einsum("nm,nmk->nk", w, features)
        mse = (flat - mixture[:, None]).pow(2).mean(-1)  # (N, M)
        per_sample = torch.where(present, mse, torch.zeros_like(mse)).sum(1) / count.clamp_min(1)
        keep = count >= 2
    return _masked_mean(per_sample, keep, latents)
