"""ProtoKD (Shuai Wang et al., ICASSP 2023): pixel-wise and prototype knowledge distillation.

* Eq. 1, :func:`pixel_kd_loss` -- KL divergence between temperature-softened class distributions of the
  student and the full-modality teacher.
* Eq. 2, :func:`class_prototypes` -- the mean feature of each class under the ground-truth mask.
* Eq. 3, :func:`similarity_maps` -- the I²FV map: cosine similarity of every voxel feature to every
  class prototype (intra-class where the voxel is of that class, inter-class elsewhere).
* Eq. 4, :func:`prototype_kd_loss` -- the squared difference between the student's and the teacher's
  I²FV maps, averaged over voxels and classes.

Where the released code differs from the paper's notation, both are here:
the KL direction and the T² factor are parameters, and so are the code's prototype choices
(background included, per-sample prototypes, a class skipped unless every sample of the batch has it).
"""

import torch
import torch.nn.functional as F

KD_FORMS = ("code", "paper")
ABSENT_POLICIES = ("batch", "sample")
EPS = 1e-5  # the code's epsilon in the prototype denominator and the cosine similarity


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 10.0,
                  form: str = "code", t_squared: bool = False) -> torch.Tensor:
    """ProtoKD Eq. 1: KL divergence between softened class distributions, averaged over N·C·voxels.

    ``form="code"`` (default): KL(σ(z_t/T) ‖ σ(z_s/T)), the released code and standard distillation
    (Hinton et al.): the student's distribution is pulled to cover the teacher's.
    ``form="paper"``: KL(σ(z_s/T) ‖ σ(z_t/T)), Eq. 1 as printed: the reverse, mode-seeking direction.
    Both are computed element-wise and averaged over every element (N, C and voxels), as the code's
    ``kl_div(..., reduction='none').mean()`` does, so the class count divides the sum. ``t_squared``
    multiplies by T² (Hinton's gradient rescaling), which the code omits; its α = 10 was tuned without it.
    The teacher's logits are detached. Logits are (N, C, *spatial).
    """
    if form not in KD_FORMS:
        raise ValueError(f"form must be one of {KD_FORMS}, got {form!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         f"logits differ in shape")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    if form == "code":
        elementwise = log_p_t.exp() * (log_p_t - log_p_s)
    else:
        elementwise = log_p_s.exp() * (log_p_s - log_p_t)
    loss = elementwise.mean()
    return loss * temperature**2 if t_squared else loss


def class_prototypes(features: torch.Tensor, classes: torch.Tensor, num_classes: int):
    """ProtoKD Eq. 2: per-sample class prototypes c_k = Σ_i z_i 1[y_i=k] / (Σ_i 1[y_i=k] + ε).

    ``features`` (N, C, *spatial), ``classes`` (N, *spatial) integer class indices at the same
    resolution. Returns ``(prototypes (N, K, C), present (N, K) bool)``; a class absent from a sample
    gets the zero vector there (the code's ε keeps the division finite).
    """
    if features.shape[0] != classes.shape[0] or features.shape[2:] != classes.shape[1:]:
        raise ValueError(f"features {tuple(features.shape)} and class map {tuple(classes.shape)} must share N "
                         f"and spatial size")
    onehot = F.one_hot(classes.long(), num_classes).movedim(-1, 1).to(features.dtype)  # (N, K, *spatial)
    sums = torch.einsum("nk...,nc...->nkc", onehot, features)
    counts = onehot.flatten(2).sum(-1)
    return sums / (counts.unsqueeze(-1) + EPS), counts > 0


def similarity_maps(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """ProtoKD Eq. 3, the I²FV map: M_k(i) = z_i·c_k / (‖z_i‖ ‖c_k‖), for every voxel i and class k.

    ``features`` (N, C, *spatial), ``prototypes`` (N, K, C) -> maps (N, K, *spatial) in [-1, 1].
    """
    z = features / features.norm(dim=1, keepdim=True).clamp_min(EPS)
    c = prototypes / prototypes.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return torch.einsum("nc...,nkc->nk...", z, c)


def prototype_kd_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, classes: torch.Tensor,
                      num_classes: int = 4, include_background: bool = True, absent: str = "batch",
                      inter_class: bool = True) -> torch.Tensor:
    """ProtoKD Eq. 4: mean over voxels i and classes k of (M^s_k(i) − M^t_k(i))².

    Each network's map uses its own prototypes (Eq. 2 on its own features, ground-truth masks); the
    teacher's side is detached. The released code's choices are the defaults:
    ``include_background`` (class 0 is a class like the others), ``absent="batch"`` (a class is used only
    if every sample of the batch contains it; otherwise it is skipped for the whole batch), and
    ``inter_class=True`` (every voxel against every prototype). ``absent="sample"`` keeps, per sample,
    the classes that sample contains. ``inter_class=False`` is Table 3's "intra-class only" row: a voxel
    is compared with its own class's prototype only. Returns 0 (with a gradient path) if no class is kept.
    """
    if absent not in ABSENT_POLICIES:
        raise ValueError(f"absent must be one of {ABSENT_POLICIES}, got {absent!r}")
    if student_features.shape[0] != teacher_features.shape[0] or \
            student_features.shape[2:] != teacher_features.shape[2:]:
        raise ValueError(f"student {tuple(student_features.shape)} and teacher {tuple(teacher_features.shape)} "
                         f"features must share N and spatial size")
    teacher_features = teacher_features.detach()
    proto_s, present = class_prototypes(student_features, classes, num_classes)
    proto_t, _ = class_prototypes(teacher_features, classes, num_classes)
    squared = (similarity_maps(student_features, proto_s) - similarity_maps(teacher_features, proto_t)) ** 2

    keep = present.all(dim=0, keepdim=True).expand_as(present) if absent == "batch" else present  # (N, K)
    if not include_background:
        keep = keep.clone()
        keep[:, 0] = False
    spatial = [1] * (squared.dim() - 2)
    weight = keep.to(squared.dtype).view(*keep.shape, *spatial).expand_as(squared)
    if not inter_class:
        weight = weight * F.one_hot(classes.long(), num_classes).movedim(-1, 1).to(squared.dtype)
    total = weight.sum()
    if total == 0:
        return squared.sum() * 0.0
    return (squared * weight).sum() / total
