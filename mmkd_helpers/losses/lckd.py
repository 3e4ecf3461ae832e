"""LCKD (Wang et al., MICCAI 2023): the cross-modal knowledge-distillation loss, Eq. 4.

The teacher election of Eqs. 1-2 needs a model and validation data, so it lives with the method in
:mod:`mmkd_helpers.methods.lckd`; this module holds only the loss.
"""

import torch

TEACH_MODES = ("students", "all")


def _student_mask(num_modalities: int, teachers, teach: str, device) -> torch.Tensor:
    """(M,) bool: which modalities may be pulled toward a teacher."""
    if teach not in TEACH_MODES:
        raise ValueError(f"teach must be one of {TEACH_MODES}, got {teach!r}")
    mask = torch.ones(num_modalities, dtype=torch.bool, device=device)
    if teach == "students":
        mask[list(teachers)] = False
    return mask


def cross_modal_kd_loss(features: torch.Tensor, present: torch.Tensor, teachers, p: int = 1,
                        teach: str = "students", reduction: str = "mean") -> torch.Tensor:
    """Cross-modal KD loss, LCKD (Wang et al., MICCAI 2023) Eq. 4.

    For every sample n: ``sum over available teachers t in T∩A and available students s in A of
    d(sg(f_t), f_s)``, where A is the set of modalities present in that sample and sg is stop-gradient
    (the teacher feature is detached, so only students receive the gradient).

    * ``features`` (N, M, C, *spatial): per-modality features (the bottleneck, before missing-feature
      filling); ``present`` (N, M) bool; ``teachers``: modality indices (the elected set T).
    * ``p=1``: d = mean absolute difference over all C x spatial elements of the pair (the official
      code). ``p=2``: d = mean squared difference over the same elements. The paper writes a
      p-norm ||.||_p; the code only has the mean-normalised L1 version, and its ablation (Fig. 3) speaks of
      an "L2 loss", so both are mean-normalised and p=2 is squared (no root), the usual MSE.
    * Pairs are **summed**, not averaged, as in the code: the loss grows with
      |T∩A| x |A|.
    * ``teach="students"`` (the paper): s ranges over the available non-teachers.
      ``teach="all"`` (the code): s ranges over every available modality, the
      teacher itself (a zero term) and the other teachers included, so two present teachers pull on
      each other.
    * ``reduction``: ``"mean"`` over samples (with one modality subset per batch, as in the code, this
      equals the code's mean over the whole N x C x spatial tensor), ``"sum"``, or ``"none"`` (N,).
    """
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    n, m = features.shape[:2]
    if tuple(present.shape) != (n, m):
        raise ValueError(f"present must be (N, M) = {(n, m)} like features, got {tuple(present.shape)}")
    teachers = sorted(set(int(t) for t in teachers))
    if not all(0 <= t < m for t in teachers):
        raise ValueError(f"teachers must be modality indices in [0, {m}), got {teachers}")
    flat = features.float().flatten(2)  # (N, M, C*spatial); float32 even under autocast
    present = present.to(flat.device).bool()
    students = present & _student_mask(m, teachers, teach, flat.device)
    per_sample = flat.new_zeros(n)
    for t in teachers:
        diff = flat[:, t:t + 1].detach() - flat  # (N, M, C*spatial): teacher t against every modality
        distance = (diff.abs() if p == 1 else diff.square()).mean(dim=2)  # (N, M)
        pairs = students & present[:, t:t + 1]  # a missing teacher contributes nothing
        per_sample = per_sample + (distance * pairs).sum(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
